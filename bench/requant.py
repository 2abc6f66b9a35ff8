"""Speed against fidelity of the embedded model's weight formats on llama.cpp.

    .venv/bin/python bench/requant.py [--seeds 2]

The shipped file is Q4_1; awrs runs an F16 copy by default (``quant=``). For each format (the
shipped file as-is, Q8_0, F16, Q4_0) it prints AWRS-SMC ms per particle-token on the regex task
at 1, 10 and 64 particles (llama.cpp), the forward pass alone for 1, 10 and 64 distinct rows
(the fastest of 10 steps), and the mean KL of the next-token distributions over
every position of a fixed set of texts, from two references: the shipped weights' exact values
(the transformers backend, which dequantizes the shipped file to float32) and llama.cpp running
the shipped file. Requantized files are cached like the transformers conversion
(:func:`awrs.models.embedded.requantized_gguf`).
"""

from __future__ import annotations

import json

import numpy as np
from step_costs import forward_only  # bench/ is on the path when this file runs

import awrs
from awrs.benchmarks.scaling import measure_scaling
from awrs.models import DEFAULT_QUANT
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
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    formats = ("q4_1", "q8_0", "f16", "q4_0")
    paths = {fmt: embedded_gguf_path() if fmt == "q4_1" else requantized_gguf(fmt) for fmt in formats}
    exact = awrs.load_model(backend="hf")
    exact_logprobs = [next_token_logprobs(exact, t) for t in TEXTS]
    del exact
    results, shipped_logprobs = {}, None
    for fmt in formats:  # each model alone in the process while it is timed
        model = awrs.load_model(str(paths[fmt]), backend="llamacpp")
        rows = measure_scaling(model, (1, 10, 64), seeds=args.seeds)
        logprobs = [next_token_logprobs(model, t) for t in TEXTS]
        shipped_logprobs = logprobs if fmt == "q4_1" else shipped_logprobs
        results[fmt] = {
            **{f"ms_{row['particles']}": row["ms_per_particle_token"] for row in rows},
            "kl_exact": float(np.mean([mean_kl(e, q) for e, q in zip(exact_logprobs, logprobs)])),
            "kl_shipped": float(np.mean([mean_kl(s, q) for s, q in zip(shipped_logprobs, logprobs)])),
        }
        model.close()
        for rows in (1, 10, 64):
            results[fmt][f"forward_{rows}"] = forward_only(fmt, None, rows)
    print("| weights | ms per particle-token, 1 particle | 10 | 64 | forward pass, 1 / 10 / 64 distinct rows "
          "(ms, fastest of 10) | mean KL from the exact weights | from llama.cpp's shipped file |")
    print("|---|---|---|---|---|---|---|")
    for fmt, r in results.items():
        name = fmt.upper() + (" (shipped)" if fmt == "q4_1" else " (default)" if fmt == DEFAULT_QUANT else "")
        print(f"| {name} | {r['ms_1']:.2f} | {r['ms_10']:.2f} | {r['ms_64']:.2f} | {r['forward_1']:.1f} / "
              f"{r['forward_10']:.1f} / {r['forward_64']:.1f} | {r['kl_exact']:.1e} | {r['kl_shipped']:.1e} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
