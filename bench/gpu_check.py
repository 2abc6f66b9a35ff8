"""awrs on a GPU machine where nothing can be downloaded: one line per check (bench/gpu_check.sh).

It builds its own model there: a byte-level BPE tokenizer trained on a paragraph below and a
small Llama model (SmolLM2's architecture) with random weights, saved to a folder. Then:

* exactness: AWRS-SMC's posterior over a finite language against the exact one, enumerated
  over every tokenization with float64 transformers on the CPU (TV <= 0.03 + 3 SE, and the
  log-ML unbiased), on the transformers backend on CUDA and, where vLLM is installed, on the
  vllm backend;
* speed: ms per particle-token of AWRS-SMC and of unconstrained sampling at 10, 64 and 256
  particles on each backend.

``--dry-run`` runs the same on the CPU with fewer runs and particles, and skips the CUDA lines.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

CORPUS = (
    "the cat sat on the mat. a dog ran after the cat. cats and dogs, mats and hats. "
    "the sea is salty because rivers carry salt into it. yes or no? yes, because it rains. "
    "no, because the sun is hot. 0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ "
) * 4
# each string has several tokenizations; none is a prefix of another (after " cat", a likelier " cats"
# would leave " cat" to the rare particles that end there: a fair check, but a noisy one)
LANGUAGE = [" cat", " mat", " hat", " dog."]
PROMPT = "the"
EOS = "<|endoftext|>"


def line(status: str, name: str, detail: str) -> None:
    print(f"{status:<4} {name}: {detail}", flush=True)


def build_model(folder: Path, seed: int = 0) -> None:
    """A tokenizer and a small Llama model with random weights, saved as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([CORPUS], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.05, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def exact_posterior(folder: Path, vocab, max_tokens: int) -> tuple[dict[str, float], float]:
    """p(string | language) and log P(language): every tokenization of every string (token
    bytes from awrs's vocabulary), then EOS, scored in float64 on the CPU."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    prompt = tokenizer(PROMPT)["input_ids"]
    eos = sorted(vocab.eos_ids)
    pieces = [(i, t) for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids and t]
    targets = {s.encode(): s for s in LANGUAGE}
    mass = dict.fromkeys(LANGUAGE, 0.0)
    frontier = [((), b"", 0.0)]
    for depth in range(max_tokens + 1):
        following = []
        for ids, text, logp in frontier:
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + list(ids)])).logits[0, -1]
            logprobs = torch.log_softmax(logits, dim=-1).numpy()
            if text in targets:
                mass[targets[text]] += math.exp(logp) * float(np.exp(logprobs[eos]).sum())
            if depth < max_tokens:
                following += [(ids + (i,), text + t, logp + float(logprobs[i])) for i, t in pieces
                              if any(s.startswith(text + t) for s in targets)]
        frontier = following
    total = sum(mass.values())
    return {s: m / total for s, m in mass.items()}, math.log(total)


def exactness(model, exact: dict, log_p: float, runs: int, particles: int, max_tokens: int) -> tuple[bool, str]:
    import numpy as np
    import regex

    import awrs
    from awrs.constraints import Regex

    pattern = Regex("|".join(regex.escape(s) for s in LANGUAGE))
    shares, ratios = np.zeros((runs, len(LANGUAGE))), np.zeros(runs)
    for seed in range(runs):
        result = awrs.generate(model, PROMPT, pattern, particles=particles, max_tokens=max_tokens, seed=seed)
        shares[seed] = [result.posterior.get(s, 0.0) for s in LANGUAGE]
        ratios[seed] = result.log_marginal_likelihood - log_p
    truth = np.array([exact[s] for s in LANGUAGE])
    tv = 0.5 * float(np.abs(shares.mean(axis=0) - truth).sum())
    allowed = 0.03 + 1.5 * float((shares.std(axis=0, ddof=1) / math.sqrt(runs)).sum())
    mean_ratio, median = float(np.mean(np.exp(ratios))), float(np.median(ratios))
    ok = tv <= allowed and abs(mean_ratio - 1) <= 0.2 and abs(median) <= 0.5
    return ok, (f"TV {tv:.3f} (allowed {allowed:.3f}), exp(log-ML - log P) mean {mean_ratio:.3f}, "
                f"median log ratio {median:+.3f}, {runs} runs x {particles} particles")


def timings(model, counts, max_tokens: int = 24) -> str:
    import awrs
    from awrs.constraints import Regex

    pattern = Regex(r" (yes|no), because [a-z ,]{3,40}\.")
    awrs.generate(model, "the sea is salty", pattern, particles=2, max_tokens=4, seed=0)  # warm up
    cells = []
    for n in counts:
        per = {}
        for method in ("awrs-smc", "unconstrained"):
            start = time.perf_counter()
            result = awrs.generate(model, "the sea is salty", pattern, particles=n, max_tokens=max_tokens,
                                   method=method, seed=0)
            seconds = time.perf_counter() - start
            per[method] = 1000 * seconds / max(result.stats.tokens, 1)
        cells.append(f"{n}: awrs {per['awrs-smc']:.2f} / free {per['unconstrained']:.2f}")
    return "ms per particle-token, " + "; ".join(cells)


def check_backend(backend: str, device: str, folder: Path, exact, log_p, args) -> bool:
    """Load, exactness and speed lines for one backend; whether all passed."""
    import awrs

    name = f"{backend} on {device}"
    options = {"threads": 1} if backend == "vllm" and device == "cpu" else {}
    try:
        start = time.perf_counter()
        model = awrs.load_model(str(folder), backend=backend, device=device, verbose=False, **options)
        line("PASS", f"load {name}", f"{time.perf_counter() - start:.1f} s, {model.runs_as}")
    except Exception as err:  # noqa: BLE001 - one line per check, the script goes on
        line("FAIL", f"load {name}", f"{type(err).__name__}: {err}")
        return False
    try:
        ok, detail = exactness(model, exact, log_p, args.runs, args.particles, args.max_tokens)
        line("PASS" if ok else "FAIL", f"exactness {name}", detail)
        line("PASS", f"speed {name}", timings(model, args.counts))
        return ok
    except Exception as err:  # noqa: BLE001
        line("FAIL", f"run {name}", f"{type(err).__name__}: {err}")
        return False
    finally:
        if hasattr(model, "close"):
            model.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU, smaller; CUDA checks are skipped")
    parser.add_argument("--folder", default=None, help="where to build the model (default: a temporary folder)")
    args = parser.parse_args()
    args.runs, args.particles, args.max_tokens = (8, 64, 6) if args.dry_run else (16, 64, 6)
    args.counts = (2, 4) if args.dry_run else (10, 64, 256)
    started = time.perf_counter()
    missing = [m for m in ("numpy", "regex", "torch", "transformers", "tokenizers") if not _importable(m)]
    if missing:
        line("SKIP", "everything", f"missing Python packages: {', '.join(missing)} (awrs needs numpy and regex; "
             "the checks need torch, transformers and tokenizers)")
        return 1
    import torch

    cuda = torch.cuda.is_available()
    line("INFO", "environment", f"Python {sys.version.split()[0]}, torch {torch.__version__} (CUDA "
         f"{torch.version.cuda}), vLLM {_version('vllm') or 'not installed'}, "
         f"GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}")
    devices = ["cpu"] if args.dry_run else ["cuda"]
    if args.dry_run:
        line("SKIP", "CUDA checks", "--dry-run: the same checks run on the CPU, smaller, instead")
    elif not cuda:
        line("SKIP", "CUDA checks", "torch.cuda.is_available() is False here (use --dry-run on a CPU)")
        return 1
    with tempfile.TemporaryDirectory(prefix="awrs-gpu-check-") as scratch:
        folder = Path(args.folder or scratch) / "tiny-llama"
        start = time.perf_counter()
        build_model(folder)
        import awrs

        vocab = awrs.load_model(str(folder), backend="hf", verbose=False).vocab
        exact, log_p = exact_posterior(folder, vocab, args.max_tokens)
        shares = ", ".join(f"{s!r} {p:.3f}" for s, p in exact.items())
        line("PASS", "model and exact posterior", f"{len(vocab)} tokens, built and enumerated in "
             f"{time.perf_counter() - start:.1f} s; {shares}; log P {log_p:.2f}")
        backends = ["hf"] + (["vllm"] if _importable("vllm") else [])
        if "vllm" not in backends:
            line("SKIP", "vllm backend", "vLLM is not installed in this Python")
        passed = [check_backend(backend, device, folder, exact, log_p, args)
                  for backend, device in itertools.product(backends, devices)]
    line("INFO", "total", f"{time.perf_counter() - started:.0f} s; {passed.count(False)} backend(s) failed")
    return 0 if all(passed) else 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _version(module: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(module) if _importable(module) else None
    except importlib.metadata.PackageNotFoundError:
        return "installed"


if __name__ == "__main__":
    sys.exit(main())
