"""How early a streamed answer arrives: constrained SMC streams against an unconstrained stream.

For three requests (the fruit list, a JSON object of about 60 tokens, a Spider question with its
database's SQL grammar) and each model, runs what ``awrs serve`` runs for ``stream: true``
(the server's streaming policy, ``awrs.smc.commitment.STREAMING_POLICY``, and the settled text it
sends after every step) and prints per request and seed:

* ``first``: seconds to the first content delta, and that as a share of the request's time;
* ``early``: the share of the answer's characters sent before the last quarter of its time;
* ``deltas``: how many content deltas (the end's remainder counted as one);
* ``no sample``: runs that found no valid text (a stream that then ends with an error);
* the same for the run without the streaming policy (what a stream sent before it existed),
  and for an unconstrained one-sample stream of the same prompt, the reference.

Seconds are measured in this process (no HTTP), prompt included; one model at a time, on
llama.cpp with one thread unless ``--threads`` says otherwise.

    python bench/stream_latency.py [--models smollm2-135m qwen2.5-coder-0.5b] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import awrs
from awrs.constraints import JsonSchema, Regex
from awrs.smc.commitment import STREAMING_POLICY
from awrs.smc.streaming import SettledText

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"},
        "email": {"type": "string"}, "hobbies": {"type": "array", "items": {"type": "string"}},
        "married": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "email", "hobbies", "married"],
    "additionalProperties": False,
}


@dataclass
class Request:
    name: str
    prompt: object
    constraint: object
    max_tokens: int
    chat: bool = True


def requests(data: Path) -> list[Request]:
    from awrs.evaluation import get_domain

    spider = get_domain("spider")
    folder = data / spider.folder if (data / spider.folder).is_dir() else data
    instance = next(i for i in spider.instances(folder, seed=0) if i.skip is None)
    return [
        Request("fruit", "List three fruits, comma separated.",
                Regex("[A-Z][a-z]+, [A-Z][a-z]+, [A-Z][a-z]+"), 24),
        Request("json", "Describe a person as JSON: name, age, city, email, hobbies and whether "
                "they are married.", JsonSchema(PERSON), 100),
        Request(f"spider ({instance.id})", instance.prompt, spider.constraint(instance), 100),
    ]


def stream(model, request: Request, seed: int, **options) -> dict:
    """One run with the server's step hook; when each piece of settled text arrived."""
    settled = SettledText(model.vocab)
    arrivals: list[tuple[float, int]] = []
    start = time.perf_counter()

    def on_step(particles) -> None:
        delta = settled.update(particles)
        if delta:
            arrivals.append((time.perf_counter() - start, len(delta)))

    result = awrs.generate(model, request.prompt, request.constraint, max_tokens=request.max_tokens,
                           chat=request.chat, seed=seed, on_step=on_step, **options)
    total = time.perf_counter() - start
    # the unconstrained reference's text is what it streamed, valid or not
    answer = result.text or (result.samples[0].text if result.samples else "")
    rest = len(answer) - len(settled.text)
    if rest > 0:  # the server sends what is left when the run ends
        arrivals.append((total, rest))
    sent_early = sum(n for t, n in arrivals if t < 0.75 * total)
    return {
        "seconds": total,
        "first": arrivals[0][0] if arrivals else None,
        "first_share": arrivals[0][0] / total if arrivals else None,
        "early": sent_early / len(answer) if answer else None,
        "deltas": len(arrivals),
        "answer": answer,
        "ess": result.ess,
    }


ROWS = {
    "streamed": dict(particles=8, **STREAMING_POLICY),
    "no policy": dict(particles=8),
    "unconstrained": dict(particles=1, method="unconstrained"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads (default 1: on a busy 2-core machine two threads "
                             "wait for each other)")
    parser.add_argument("--json", type=Path, help="also write every run here (JSON lines)")
    args = parser.parse_args()
    lines = []
    print("| model | request | row | seconds | first delta (s) | first / total | early chars | deltas "
          "| no sample |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        model = awrs.load_model(name, n_threads=args.threads)
        for request in requests(args.data):
            stream(model, request, 0, **ROWS["unconstrained"])  # warm-up: the prompt, the checker
            for row, options in ROWS.items():
                runs = [stream(model, request, seed, **options) for seed in range(args.seeds)]
                for seed, run in enumerate(runs):
                    lines.append(dict(run, model=name, request=request.name, row=row, seed=seed))
                print(f"| {name} | {request.name} | {row} | {_mean(runs, 'seconds'):.2f} | "
                      f"{_mean(runs, 'first'):.2f} | {_mean(runs, 'first_share'):.2f} | "
                      f"{_mean(runs, 'early'):.2f} | {_mean(runs, 'deltas'):.1f} | "
                      f"{sum(not run['answer'] for run in runs)} of {len(runs)} |", flush=True)
    if args.json:
        args.json.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _mean(runs: list[dict], key: str) -> float:
    values = [r[key] for r in runs if r[key] is not None]
    return float(np.mean(values)) if values else float("nan")


if __name__ == "__main__":
    main()
