"""Run one evaluation method on one instance: weighted outputs plus run statistics."""

from __future__ import annotations

from ..generate import METHODS as GENERATE_METHODS
from ..generate import generate
from ..result import Result

# the methods `awrs eval` compares (paper notes §4.0.1); other awrs.generate methods also work
EVAL_METHODS = ["unconstrained", "masking", "lcd", "awrs-smc", "sample-rerank"]
ALL_METHODS = EVAL_METHODS + [m for m in GENERATE_METHODS if m not in EVAL_METHODS]


def run_method(model, instance, constraint, method: str, *, particles: int, max_tokens: int,
               seed: int, time_limit: float | None = None, **options) -> tuple[list[dict], Result]:
    """Generate for ``instance`` and return ``(outputs, result)``.

    Each output is ``{"text", "weight", "valid"}``; weights sum to 1 over the outputs (or the
    outputs are empty). ``unconstrained``: every finished sample, equal weights (invalid ones
    included; they score 0). ``sample-rerank``: N unconstrained samples, only the valid ones
    kept, equal weights among them. Other methods: the result's sample probabilities.
    ``options`` go to :func:`awrs.generate` (``ess_threshold``, ``budget_twist``).
    """
    base = "unconstrained" if method == "sample-rerank" else method
    result = generate(
        model, instance.prompt, constraint, particles=particles, max_tokens=max_tokens,
        method=base, seed=seed, chat=instance.chat, system=instance.system, time_limit=time_limit,
        **options,
    )
    samples = result.samples
    if method == "sample-rerank":
        samples = [s for s in samples if s.valid]
        weights = [1.0 / len(samples)] * len(samples) if samples else []
    else:
        total = sum(s.probability for s in samples)
        weights = [s.probability / total for s in samples] if total > 0 else []
    outputs = [{"text": s.text, "weight": w, "valid": bool(s.valid)} for s, w in zip(samples, weights)]
    return outputs, result


class StopStrings:
    """``model`` with every token that contains one of ``stops`` treated as end-of-sequence.

    The paper's pattern and molecule tasks end a text at a newline (paper notes §4.4, §4.5):
    any token containing ``"\\n"`` is EOS, and, like EOS, contributes no text. Everything
    else (sessions, prompts, chat template) is the wrapped model's.
    """

    def __init__(self, model, stops) -> None:
        from ..vocab import Vocabulary

        base = model.vocab
        extra = {i for i, tok in enumerate(base.tokens)
                 if i not in base.special_ids and any(s.encode() in tok for s in stops)}
        self._model = model
        self.vocab = Vocabulary(base.tokens, frozenset(base.eos_ids | extra), base.special_ids,
                                trie_cache=base.trie_cache)
        self.name = getattr(model, "name", "model")
        self.stops = tuple(stops)

    def __getattr__(self, attribute):
        return getattr(self._model, attribute)

    def prompt_ids(self, prompt, *, chat=False, system=None):
        return self._model.prompt_ids(prompt, chat=chat, system=system)


def with_stops(model, stops):
    """Wrap ``model`` once per stop set (cached on the model: building a vocabulary costs)."""
    if not stops:
        return model
    cache = model.__dict__.setdefault("_awrs_eval_stops", {})
    key = tuple(stops)
    if key not in cache:
        cache[key] = StopStrings(model, stops)
    return cache[key]
