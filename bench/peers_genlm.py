"""Run genlm-control's AWRS-SMC on the tasks of ``bench/peers.py`` (inside ``.venv-peers``).

    .venv-peers/bin/python bench/peers_genlm.py TASKS.json RESULTS.json

Not imported by awrs: it runs in the separate environment that ``make bench-peers`` builds,
where genlm-control is installed, and talks to ``bench/peers.py`` only through the two JSON
files. Each task gives the prompt as token ids (the ones awrs uses), the constraint (a regex
or a JSON Schema), particles, token limit and seeds. genlm-control is used the way its README
does (``PromptedLLM`` + ``BoolFSA.from_regex`` or ``JsonSchema``, coerced to the model's
tokens, ``AWRS``, ``token_sampler.smc``), on the same float32 weights that awrs's
transformers backend loads. Its model keeps every evaluated context's log-probabilities in a
token trie; unless ``keep_cache`` is set, that cache is cleared before each run (the prompt's KV
is then cached again), so every run starts as cold as awrs's. Per run it records the wall time of the SMC call, the time spent
in the model's forward passes (torch hooks), the particle-tokens, and the final particles'
texts and normalised weights.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


def _timed_forward(module) -> list[float]:
    """Hooks adding the seconds spent in ``module``'s forward passes to the returned cell."""
    spent = [0.0]
    started = []
    module.register_forward_pre_hook(lambda _m, _a: started.append(time.perf_counter()))

    def done(_m, _a, _out):
        spent[0] += time.perf_counter() - started.pop()

    module.register_forward_hook(done)
    return spent


def _constraint(task: dict, llm):
    from genlm.control import BoolFSA, JsonSchema

    if task["kind"] == "regex":
        potential = BoolFSA.from_regex(task["pattern"])
    elif task["kind"] == "json":
        potential = JsonSchema(task["schema"])
    else:
        raise ValueError(f"unknown task kind {task['kind']!r}")
    return potential.coerce(llm, f=b"".join)


async def _run_task(task: dict, settings: dict, llm, forward_seconds: list[float]) -> list[dict]:
    import numpy as np
    import torch
    from genlm.control import AWRS, EOS

    runs = []
    llm.prompt_ids = list(task["prompt_ids"])
    condition = _constraint(task, llm)
    for seed in task["seeds"]:
        if not settings["keep_cache"]:  # each run starts cold, like awrs's: only the prompt is cached
            llm.model.clear_cache()
        if settings["cache_prompt"]:
            llm.model.cache_kv(list(task["prompt_ids"]))
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        sampler = AWRS(llm, condition, seed=seed)
        forward_before = forward_seconds[0]
        start = time.perf_counter()
        sequences = await sampler.smc(n_particles=task["particles"], ess_threshold=task["ess_threshold"],
                                      max_tokens=task["max_tokens"])
        seconds = time.perf_counter() - start
        particles = []
        for context, weight in zip(sequences.contexts, sequences.normalized_weights):
            ended = bool(context) and context[-1] is EOS
            body = context[:-1] if ended else context
            particles.append({"text": b"".join(body).decode("utf-8", errors="replace"), "ended": ended,
                              "weight": float(weight), "tokens": len(context)})
        runs.append({"seed": seed, "seconds": seconds, "model_seconds": forward_seconds[0] - forward_before,
                     "particle_tokens": sum(p["tokens"] for p in particles), "particles": particles})
        await sampler.cleanup()
    return runs


async def _main(spec: dict) -> dict:
    from genlm.control import PromptedLLM

    settings = spec["genlm"]
    llm = PromptedLLM.from_name(
        spec["model_dir"], backend="hf", hf_opts={"dtype": "float32", "device_map": None},
        batch_size=settings["batch_size"], timeout=settings["timeout"],
    )
    forward_seconds = _timed_forward(llm.model.model)
    warm = dict(spec["tasks"][0], seeds=[spec["tasks"][0]["seeds"][0]], max_tokens=4)
    await _run_task(warm, settings, llm, forward_seconds)
    out = {}
    for task in spec["tasks"]:
        print(f"genlm-control: {task['name']} ...", file=sys.stderr, flush=True)
        out[task["name"]] = await _run_task(task, settings, llm, forward_seconds)
    return out


def main() -> None:
    tasks_path, results_path = sys.argv[1], sys.argv[2]
    with open(tasks_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    import genlm.control

    results = {"version": getattr(genlm.control, "__version__", None), "runs": asyncio.run(_main(spec))}
    try:
        from importlib.metadata import version

        results["version"] = version("genlm-control")
    except Exception:  # noqa: BLE001 - the version is informative only
        pass
    with open(results_path, "w", encoding="utf-8") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main()
