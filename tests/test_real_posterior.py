"""AWRS-SMC against the exact global posterior of the real embedded model.

Each case is a finite language. The exact posterior p(x | constraint) is computed here, apart
from awrs's samplers: plain transformers (AutoModelForCausalLM on the converted embedded model)
scores every tokenization of every string -- every token sequence whose bytes spell it within the
token limit, followed by an EOS token -- by a search over token prefixes. Paths whose probability
falls below 1e-13 of the prompt's are dropped (together they hold far less than the tolerance).
Token bytes come from the tokenizer's own byte-level table, not from awrs.

Then awrs.generate runs 16 seeds x 64 particles (transformers backend; 8 seeds for the paper's
two-loop estimator) under masks auto, never and always, and :func:`posterior_problems` checks
the posterior and the likelihood estimate; the same checks are shown to fail the old default
estimator. The default configuration -- llama.cpp on its default F16 weights -- is checked
against the same reference too, where llama.cpp is installed, and so are two named models with
larger vocabularies, each against its own float32 reference: Gemma 3 270M (262k tokens) and
Qwen2.5-Coder 0.5B (152k).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
import regex
from conftest import llamacpp_unusable

import awrs
from awrs.constraints import Regex

pytestmark = pytest.mark.model
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RUNS, PARTICLES = 16, 64  # 16 runs: exp(log-ML) has a relative spread of ~0.3 per run
CASES = {
    # LCD puts ~0.8 on " cat xylophone." (p ~ 4e-9 under the posterior)
    "lcd-trap": ("My favourite animal is the", [" cat xylophone.", " dog.", " horse."], 12),
    # many tokenizations per string, spread mass among the strings
    "tokenizations": ("Is water wet? Answer:", [" yes", " no", " maybe", " yes!", " no!"], 6),
    # multi-byte UTF-8: é, è and ô split across tokens
    "utf-8": ("The French word for coffee is", [" café", " caffè", " kahvô"], 8),
}
# The token limit binds: " three, four, five." needs 6 tokens in every tokenization, so the target
# (at most 4 tokens) gives it no mass, though without the limit it takes ~0.64 of the posterior;
# " three, four." needs exactly 4. Not in CASES: it runs once, under the defaults.
LIMITED_CASES = {
    "token-limit": ("Count to five: one, two,", [" three.", " three, four.", " three, four, five."], 4),
}
PRUNE_BELOW = 1e-13
# The second named model, Gemma 3 270M (262,144 tokens, SentencePiece with byte fallback): "ǅ",
# "ǆ" and "Ǆ" (U+01C4-U+01C6) are no token's text, so only byte-fallback pieces (<0xC7> then
# <0x84>, <0x85> or <0x86>) spell them; they share the posterior (0.13-0.34 each), while "Dž" and
# "DŽ", spelt by ordinary pieces, are all but excluded. The language has ~4e-8 of the prompt's
# mass, so paths are pruned far lower. Not in CASES: it runs on the default backend only.
GEMMA_CASES = {
    "byte-fallback": ('Letters: ǅ, ǆ, Ǆ. The titlecase one is "', ['ǅ"', 'Dž"', 'DŽ"', 'ǅ".', 'Ǆ"', 'ǆ"'], 5),
}
GEMMA_PRUNE_BELOW = 1e-18
# The third, Qwen2.5-Coder 0.5B Instruct (151,936 tokens, byte-level BPE), on Qwen's Q4_K_M file:
# finishing a line of code with a name, where the names share pieces ("Al", "Alice") and each
# has several tokenizations within 3 tokens; the posterior is spread over four names (0.60,
# 0.29, 0.09, 0.02; the fifth, 'Al"', 0.001). The language has ~1e-6 of the prompt's
# mass. Not in CASES: it runs on the default backend only (71-98 s on a busy 2-core machine).
QWEN_CASES = {
    "names": ("# the user's name\nname = \"", ['Alice"', 'Bob"', 'John"', 'Jane"', 'Al"'], 3),
}
#: the named model each case beyond CASES and LIMITED_CASES runs on
CASE_MODELS = {**dict.fromkeys(GEMMA_CASES, "gemma3-270m"), **dict.fromkeys(QWEN_CASES, "qwen2.5-coder-0.5b")}


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte-level BPE table: printable bytes stand for themselves, the others are
    shifted to code points from 256 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


def sentencepiece_bytes(piece: str) -> bytes:
    """A SentencePiece piece's bytes: '▁' stands for a space, '<0xNN>' for one byte (byte fallback)."""
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        return bytes([int(piece[3:5], 16)])
    return piece.replace("▁", " ").encode()


#: the models an exact reference is computed for: how to find the float32 weights, how pieces
#: spell bytes, and the end-of-sequence tokens
REFERENCE_MODELS = {
    "smollm2-135m": ("byte-level", ("<|im_end|>", "<|endoftext|>")),
    "gemma3-270m": ("sentencepiece", ("<eos>", "<end_of_turn>")),
    "qwen2.5-coder-0.5b": ("byte-level", ("<|im_end|>", "<|endoftext|>")),
}


@cache
def reference(model_name: str = "smollm2-135m"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from awrs.models.embedded import ensure_converted
    from awrs.models.named import NAMED_MODELS

    directory = ensure_converted(NAMED_MODELS[model_name].gguf(verbose=False), verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    spelling, ends = REFERENCE_MODELS[model_name]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if spelling == "byte-level":
        special |= set(tokenizer.added_tokens_decoder)
        decoder = {c: b for b, c in byte_level_alphabet().items()}
        token_bytes = [None if i in special or p is None else bytes(decoder[c] for c in p)
                       for i, p in enumerate(pieces)]
    else:
        token_bytes = [None if i in special or p is None else sentencepiece_bytes(p) for i, p in enumerate(pieces)]
    eos = {tokenizer.convert_tokens_to_ids(t) for t in ends} - {None}
    return tokenizer, model, token_bytes, sorted(eos)


def exact_posterior(prompt: str, strings: list[str], max_tokens: int, model_name: str = "smollm2-135m",
                    prune_below: float = PRUNE_BELOW) -> tuple[dict[str, float], float]:
    """{string: p(string | constraint)} and log P(constraint), by enumerating tokenizations."""
    tokenizer, model, token_bytes, eos = reference(model_name)
    targets = {s.encode(): s for s in strings}
    prompt_ids = tokenizer(prompt)["input_ids"]
    mass = {s: 0.0 for s in strings}
    pieces = [(token, piece) for token, piece in enumerate(token_bytes)
              if piece and any(piece in t for t in targets)]  # the only tokens that can take part
    frontier = [((), b"", 0.0)]  # (token ids, bytes, log probability)
    for depth in range(max_tokens + 1):
        if not frontier:
            break
        following = []
        for start in range(0, len(frontier), 8):  # 8 rows at a time: a 262k vocabulary's logits are large
            chunk = frontier[start:start + 8]
            with torch.no_grad():
                width = max(len(ids) for ids, _, _ in chunk)
                batch = torch.tensor([prompt_ids + list(ids) + [0] * (width - len(ids)) for ids, _, _ in chunk])
                attention = torch.tensor([[1] * (len(prompt_ids) + len(ids)) + [0] * (width - len(ids))
                                          for ids, _, _ in chunk])
                logits = model(input_ids=batch, attention_mask=attention).logits
            for row, (ids, text, logp) in enumerate(chunk):
                last = len(prompt_ids) + len(ids) - 1
                logprobs = torch.log_softmax(logits[row, last].double(), dim=-1).numpy()
                if text in targets:
                    mass[targets[text]] += math.exp(logp) * float(np.exp(logprobs[eos]).sum())
                if depth == max_tokens:
                    continue
                for token, piece in pieces:
                    longer = text + piece
                    if any(t.startswith(longer) for t in targets):
                        value = logp + float(logprobs[token])
                        if value > math.log(prune_below):
                            following.append((ids + (token,), longer, value))
        frontier = following
    total = sum(mass.values())
    return {s: m / total for s, m in mass.items()}, math.log(total)


@cache
def cached_exact_posterior(prompt: str, strings: tuple[str, ...], max_tokens: int, model_name: str = "smollm2-135m"):
    """:func:`exact_posterior`, computed once per case in a session (tests share cases)."""
    prune = GEMMA_PRUNE_BELOW if model_name == "gemma3-270m" else PRUNE_BELOW
    return exact_posterior(prompt, list(strings), max_tokens, model_name, prune_below=prune)


@cache
def shared_model():
    # transformers: the reference above computes with the same float32 arithmetic
    return awrs.load_model(backend="hf", verbose=False)


@cache
def default_llamacpp():
    """llama.cpp as users get it by default: the F16 copy of the shipped weights (mean KL ~1e-5
    from the reference's float32 ones, see tests/test_llamacpp.py) with flash attention."""
    unusable = llamacpp_unusable()
    if unusable is not None:
        pytest.skip(f"llama-cpp-python is not usable: {unusable}")
    model = awrs.load_model(backend="llamacpp", verbose=False)
    assert model.weights == "F16"
    return model


def posterior_problems(case: str, *, masks: str = "auto", estimator: str = "poisson", runs: int = RUNS,
                       model=None, stats: list | None = None, **options) -> list[str]:
    """What is wrong with AWRS-SMC's posterior and log-ML on ``case``, over ``runs`` seeds (empty: nothing).

    Three checks, each able to fail on its own:

    * TV(mean posterior, exact) <= 0.03 plus three standard errors of that mean (one run's
      posterior is noisy even with exact weights: its standard deviation is ~0.2 on a 50/50
      case, so a fixed 0.03 over 16 runs would fail by chance). This catches gross bias (LCD:
      ~0.8) but not a noisy sampler, which widens its own allowance;
    * strings the exact posterior all but excludes (< 1e-4) get < 0.01 on average: the
      collapse of a population onto one lucky lineage, the old default's failure;
    * exp(log-ML - log P) averages within 20 % of 1 and its median within 0.5 nats: the
      likelihood estimate is unbiased (the old default's averages 0.72-0.78 here).

    ``options`` (``budget_twist``, ``resample_power``) are passed on to awrs.generate; each
    run's statistics are appended to ``stats`` when it is given.
    """
    model_name = CASE_MODELS.get(case, "smollm2-135m")
    prompt, strings, max_tokens = {**CASES, **LIMITED_CASES, **GEMMA_CASES, **QWEN_CASES}[case]
    exact, log_p = cached_exact_posterior(prompt, tuple(strings), max_tokens, model_name)
    pattern = "|".join(regex.escape(s) for s in strings)
    shares = np.zeros((runs, len(strings)))
    ratios = np.zeros(runs)
    for seed in range(runs):
        result = awrs.generate(model or shared_model(), prompt, Regex(f"(?:{pattern})"), particles=PARTICLES,
                               max_tokens=max_tokens, seed=seed, masks=masks, estimator=estimator, **options)
        assert set(result.posterior) <= set(strings)
        if stats is not None:
            stats.append(result.stats)
        shares[seed] = [result.posterior.get(s, 0.0) for s in strings]
        ratios[seed] = result.log_marginal_likelihood - log_p
    mean = shares.mean(axis=0)
    truth = np.array([exact[s] for s in strings])
    problems = []
    tv = 0.5 * float(np.abs(mean - truth).sum())
    allowed = 0.03 + 1.5 * float((shares.std(axis=0, ddof=1) / math.sqrt(runs)).sum())
    if tv > allowed:
        problems.append(f"TV {tv:.3f} > {allowed:.3f}: {dict(zip(strings, mean.round(3)))} vs {exact}")
    excluded = truth < 1e-4
    if excluded.any() and mean[excluded].sum() >= 0.01:
        problems.append(f"near-impossible strings got {mean[excluded].sum():.3f} on average")
    if abs(float(np.mean(np.exp(ratios))) - 1.0) > 0.2 or abs(float(np.median(ratios))) > 0.5:
        problems.append(f"log-ML biased: mean exp {np.mean(np.exp(ratios)):.3f}, median {np.median(ratios):.3f}")
    return problems


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("masks", ["auto", "never", "always"])
def test_awrs_smc_matches_the_exact_posterior(case, masks):
    assert posterior_problems(case, masks=masks) == []


def fewest_tokens(text: str) -> int:
    """The fewest tokens of the reference's tokenizer that spell ``text`` (its bytes)."""
    _, _, token_bytes, _ = reference()
    data = text.encode()
    pieces = {piece for piece in token_bytes if piece and piece in data}
    fewest = [0] + [math.inf] * len(data)
    for end in range(1, len(data) + 1):
        fewest[end] = min((fewest[end - len(p)] + 1 for p in pieces if data.endswith(p, 0, end)),
                          default=math.inf)
    return fewest[-1]


@pytest.mark.parametrize("options", [{}, {"budget_twist": "on", "resample_power": 0.3}],
                         ids=["defaults", "soft-twist-tempered"])
def test_where_the_token_limit_binds_the_posterior_is_the_truncated_one(options):
    """A string that no tokenization fits in max_tokens has no mass in the reference (it only
    counts tokenizations within the limit), and awrs.generate, under its defaults and with the
    soft budget twist and tempered resampling, matches that truncated posterior and its
    probability. The budget twist drops the particles that head for the long string (they
    could not finish)."""
    prompt, strings, max_tokens = LIMITED_CASES["token-limit"]
    assert [fewest_tokens(s) for s in strings] == [2, 4, 6]
    exact, _ = cached_exact_posterior(prompt, tuple(strings), max_tokens)
    assert exact[" three, four, five."] == 0.0 and exact[" three, four."] > 0.1
    stats = []
    assert posterior_problems("token-limit", stats=stats, **options) == []
    assert sum(s.budget_kills for s in stats) > 0


@pytest.mark.parametrize("case", CASES)
def test_the_default_llamacpp_backend_matches_the_exact_posterior(case):
    """What a user runs by default (llama.cpp, F16 weights, Poisson estimator, masks auto),
    against the same exact reference."""
    assert posterior_problems(case, model=default_llamacpp()) == []


@pytest.mark.parametrize("case", GEMMA_CASES)
def test_on_a_262k_vocabulary_the_default_backend_matches_the_exact_posterior(case):
    """The second named model as users run it (llama.cpp on its Q4_K_M file where installed),
    against the reference enumerated on its float32 dequantization: every tokenization,
    byte-fallback pieces included, and a string only they can spell."""
    model = awrs.load_model("gemma3-270m", verbose=False)
    assert len(model.vocab) == 262144
    prompt, strings, max_tokens = GEMMA_CASES[case]
    exact, _ = cached_exact_posterior(prompt, tuple(strings), max_tokens, "gemma3-270m")
    assert min(exact[s] for s in ('ǅ"', 'ǅ".', 'Ǆ"', 'ǆ"')) > 0.1  # byte fallback carries the mass
    assert exact['Dž"'] < 1e-3
    assert posterior_problems(case, model=model) == []


@pytest.mark.parametrize("case", QWEN_CASES)
def test_on_qwens_152k_vocabulary_the_default_backend_matches_the_exact_posterior(case):
    """The Qwen2.5-Coder 0.5B named model as users run it (llama.cpp on Qwen's Q4_K_M file where
    installed), against the reference enumerated on its float32 dequantization over every
    tokenization, with its declared end tokens (<|im_end|>, <|endoftext|>; not the text "</s>")."""
    model = awrs.load_model("qwen2.5-coder-0.5b", verbose=False)
    assert len(model.vocab) == 151936 and model.vocab.eos_ids == {151643, 151645}
    prompt, strings, max_tokens = QWEN_CASES[case]
    exact, _ = cached_exact_posterior(prompt, tuple(strings), max_tokens, "qwen2.5-coder-0.5b")
    assert sorted(exact.values())[-4] > 0.01 and exact['Al"'] < 1e-2  # spread over four names
    assert posterior_problems(case, model=model) == []


def test_the_checks_tell_wrong_weights_apart(tmp_path, monkeypatch):
    """The same checks notice a model that is off: llama.cpp on the embedded model requantized
    to Q4_0 (mean KL 0.43 from the reference's weights) fails them (its log-ML sits ~5 nats low)."""
    default_llamacpp()  # skips where llama.cpp is not usable
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path))  # the Q4_0 copy is not kept
    coarse = awrs.load_model(backend="llamacpp", quant="q4_0", verbose=False)
    try:
        assert posterior_problems("tokenizations", model=coarse) != []
    finally:
        coarse.close()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("masks", ["auto", "never"])
def test_the_papers_two_loop_estimator_matches_too(case, masks):
    """The other estimator kept for comparison, at 16 runs x 64 particles like the default (at
    8 runs its heavy-tailed log-ML sat at the tolerance's edge: seeds 0-7 passed or failed with
    the random stream, e.g. mean exp 0.75-1.11 over four sets of 8 seeds). (Under
    ``masks="always"`` a regex's exact masks give exact weights and no estimator runs: see
    the next test.) The remainder estimator is not asserted: it fails these checks, below."""
    assert posterior_problems(case, masks=masks, estimator="two-loop") == []


def test_with_exact_masks_no_estimator_runs():
    """``masks="always"`` on an automaton: every step draws from the exact mask with the exact
    weight, so both estimators give the same run, token for token."""
    prompt, strings, max_tokens = CASES["tokenizations"]
    constraint = Regex("|".join(regex.escape(s) for s in strings))
    runs = [awrs.generate(shared_model(), prompt, constraint, particles=16, max_tokens=max_tokens, seed=3,
                          masks="always", estimator=estimator) for estimator in ("poisson", "two-loop")]
    assert [s.token_ids for s in runs[0].samples] == [s.token_ids for s in runs[1].samples]
    assert runs[0].log_marginal_likelihood == runs[1].log_marginal_likelihood
    assert runs[0].stats.rejections == 0


def test_the_checks_catch_the_old_default():
    """The same checks fail the remainder estimator (the previous default), whose
    population collapsed onto " cat xylophone." in some runs and whose log-ML ran low."""
    assert posterior_problems("lcd-trap", masks="never", estimator="remainder") != []


def test_the_exact_posterior_tells_lcd_apart():
    """The reference is sharp: locally constrained decoding, which commits to " cat" first,
    is far from it on the first case (the issue measured 0.80 on " cat xylophone.")."""
    prompt, strings, max_tokens = CASES["lcd-trap"]
    exact, _ = cached_exact_posterior(prompt, tuple(strings), max_tokens)
    pattern = "|".join(regex.escape(s) for s in strings)
    result = awrs.generate(shared_model(), prompt, Regex(f"(?:{pattern})"), method="lcd", particles=PARTICLES,
                           max_tokens=max_tokens, seed=0)
    assert result.posterior.get(" cat xylophone.", 0.0) > 0.5 > exact[" cat xylophone."]
