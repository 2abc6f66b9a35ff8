"""Speed against fidelity of the embedded model requantized for llama.cpp's batched CPU kernels.

    .venv/bin/python bench/requant.py

The shipped file is Q4_1. For each format (the shipped file as-is, Q8_0, Q4_0) it prints:
AWRS-SMC ms per particle-token on the regex task at 10 and 64 particles (llama.cpp, two
seeds), and the mean KL(shipped || format) of the next-token distributions over every position
of a fixed set of texts. Requantized files are cached like the transformers conversion
(:func:`awrs.models.embedded.requantized_gguf`).
"""

from __future__ import annotations

import json

import numpy as np

import awrs
from awrs.models.embedded import embedded_gguf_path, requantized_gguf

TEXTS = [
    "The ocean covers most of the planet and holds most of its water.",
    'Describe a cat as JSON: {"name": "Tom", "age": 3}',
    "SELECT name FROM singer WHERE age > 30 ORDER BY name;",
    "Is the sea salty? yes, because rivers carry minerals into it.",
    "Once upon a time, in a land far away, there lived an old king.",
    "Teal: #008080, a dark cyan between blue and green.",
]


def next_token_logprobs(model, text: str) -> np.ndarray:
    ids = model.encode(text)
    rows = []
    for cut in range(1, len(ids)):
        session = model.open(ids[:cut], 1)
        rows.append(session.logprobs()[0].astype(np.float64))
        session.close()
    return np.stack(rows)


def mean_kl(p_log: np.ndarray, q_log: np.ndarray) -> float:
    return float(np.mean(np.sum(np.exp(p_log) * (p_log - q_log), axis=1)))


def main() -> None:
    import sys
    sys.path.insert(0, "bench")
    from scaling import measure

    formats = ("q4_1 (shipped)", "q8_0", "q4_0")
    paths = {fmt: embedded_gguf_path() if fmt.startswith("q4_1") else requantized_gguf(fmt) for fmt in formats}
    results = {}
    for fmt in formats:  # speed first, each model in a fresh state
        model = awrs.load_model(str(paths[fmt]), backend="llamacpp")
        awrs.generate(model, "Hi", awrs.Regex("[a-z]+"), particles=2, max_tokens=4, seed=0)  # warm up
        results[fmt] = {f"ms_{n}": measure(model, n, range(2), 30)["ms_per_particle_token"] for n in (10, 64)}
        model.close()
    shipped = awrs.load_model(str(paths[formats[0]]), backend="llamacpp")
    reference = [next_token_logprobs(shipped, t) for t in TEXTS]
    for fmt in formats:
        model = shipped if fmt == formats[0] else awrs.load_model(str(paths[fmt]), backend="llamacpp")
        results[fmt]["kl"] = 0.0 if model is shipped else float(np.mean([
            mean_kl(ref, next_token_logprobs(model, t)) for ref, t in zip(reference, TEXTS)]))
        r = results[fmt]
        print(f"| {fmt} | {r['ms_10']:.2f} | {r['ms_64']:.2f} | {r['kl']:.2e} |", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
