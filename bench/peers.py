"""awrs against genlm-control (the AWRS authors' library) and on vLLM, side by side in one run.

    make bench-peers                       # builds .venv-peers once, then runs this
    .venv/bin/python bench/peers.py [--seeds 5] [--rounds 2] [--backends hf llamacpp]
    .venv/bin/python bench/peers.py --peers vllm --threads 1 --seeds 2 [--vllm-dtype float32 bfloat16]

Three tasks, each run by both libraries with the same prompt token ids, constraint, particles
(10), token limit and seeds, on the embedded SmolLM2-135M-Instruct:

- ``regex``: the scaling benchmark's regex task (a yes/no answer and a reason);
- ``json``: a JSONSchemaBench schema (Github_easy/o27838) with the JSON evaluation's prompt;
  awrs's ``JsonSchema(whitespace="free")``, the language closest to genlm-control's
  ``JsonSchema`` (JSON whitespace between tokens; genlm-control also forbids leading
  whitespace, blank lines and tabs, awrs caps a whitespace run at 16 bytes). awrs's default,
  compact JSON, is a smaller language: a model that wants ``", "`` is pushed into long strings;
- ``genlm-readme``: genlm-control's own README example (its prompt and its emoji regex).

genlm-control runs in ``.venv-peers`` (``bench/peers_genlm.py``, a separate process) on the
float32 weights that awrs's transformers backend loads (the embedded GGUF file dequantized),
with the prompt's KV cache computed before timing (``cache_kv``), as fast as its own options
allow; its cache of evaluated contexts is cleared between runs (``--genlm-keep-cache`` keeps
it, so later seeds reuse earlier ones' evaluations; awrs keeps nothing between runs but the
prompt). awrs runs here on transformers (the same weights and arithmetic) and on llama.cpp (the
default backend, on its default F16 copy of the shipped weights). Prints a Markdown table: ms per particle-token
(the median over runs, and the range), the model's share of the time, the posterior's valid
mass and how many runs returned a valid text, and awrs's speed-up over genlm-control.

``--peers vllm`` (the default where ``.venv-vllm`` exists, with genlm) adds a second table: awrs
on vLLM against awrs on llama.cpp, same model, at 1, 10 and 64 particles (``bench/peers_vllm.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awrs
from awrs.benchmarks.scaling import PATTERN as REGEX_TASK_PATTERN
from awrs.benchmarks.scaling import PROMPT as REGEX_TASK_PROMPT
from awrs.evaluation.domains.json_schema import messages as json_messages
from awrs.models.embedded import embedded_gguf_path, ensure_converted
from awrs.models.vllm_engine import DTYPES
from peers_vllm import VLLM_PYTHON, compare_with_vllm, format_vllm_table

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
SCHEMA_FILE = "jsonschemabench/Github_easy/o27838.json"
DEFAULT_PEERS = ["genlm", *(["vllm"] if VLLM_PYTHON.is_file() else [])]


def tasks(model, seeds: list[int]) -> list[dict]:
    path = ROOT.parent / "shared" / "data" / SCHEMA_FILE
    if not path.is_file():
        raise SystemExit(f"bench/peers.py: {path} not found (the shared data folder beside the checkout)")
    schema = json.loads(path.read_text(encoding="utf-8"))
    common = {"particles": 10, "ess_threshold": 0.5, "seeds": seeds}
    return [
        dict(common, name="regex", kind="regex", pattern=REGEX_TASK_PATTERN, max_tokens=30,
             prompt_ids=model.prompt_ids(REGEX_TASK_PROMPT, chat=True)),
        dict(common, name="json", kind="json", schema=schema, max_tokens=40,
             prompt_ids=model.prompt_ids(json_messages(json.dumps(schema)), chat=True)),
        dict(common, name="genlm-readme", kind="regex", pattern=" SMC is (🔥🔥|😍😍|🤌🤌) with LMs", max_tokens=30,
             prompt_ids=model.prompt_ids("Here is my honest opinion:")),
    ]


def is_valid(task: dict, text: str) -> bool:
    if task["kind"] == "regex":
        return re.fullmatch(task["pattern"], text) is not None
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), task["schema"])
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def run_genlm(spec: dict) -> dict:
    if not PEERS_PYTHON.is_file():
        raise SystemExit("bench/peers.py: .venv-peers is missing; run `make bench-peers`, which builds it")
    with tempfile.TemporaryDirectory() as tmp:
        tasks_path, results_path = Path(tmp) / "tasks.json", Path(tmp) / "results.json"
        tasks_path.write_text(json.dumps(spec), encoding="utf-8")
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
               "PATH": "/usr/bin:/bin"}
        subprocess.run([str(PEERS_PYTHON), str(ROOT / "bench" / "peers_genlm.py"), str(tasks_path),
                        str(results_path)], check=True, env=env)
        return json.loads(results_path.read_text(encoding="utf-8"))


def genlm_summary(task: dict, runs: list[dict]) -> dict:
    rows = []
    for run in runs:
        valid_mass = sum(p["weight"] for p in run["particles"] if p["ended"] and is_valid(task, p["text"]))
        rows.append({"ms": 1000 * run["seconds"] / max(run["particle_tokens"], 1),
                     "model_share": run["model_seconds"] / max(run["seconds"], 1e-9),
                     "valid_mass": valid_mass, "valid_run": valid_mass > 0})
    return rows


def run_awrs(model, task: dict) -> list[dict]:
    constraint = (awrs.Regex(task["pattern"]) if task["kind"] == "regex"
                  else awrs.JsonSchema(task["schema"], whitespace="free"))
    rows = []
    for seed in task["seeds"]:
        start = time.perf_counter()
        result = awrs.generate(model, task["prompt_ids"], constraint, particles=task["particles"],
                               max_tokens=task["max_tokens"], ess_threshold=task["ess_threshold"], seed=seed)
        seconds = time.perf_counter() - start
        valid_mass = sum(p for text, p in result.posterior.items() if is_valid(task, text))
        rows.append({"ms": 1000 * seconds / max(result.stats.tokens, 1),
                     "model_share": result.stats.model_seconds / max(seconds, 1e-9),
                     "valid_mass": valid_mass, "valid_run": valid_mass > 0})
    return rows


def summary(rows: list[dict]) -> dict:
    ms = [r["ms"] for r in rows]
    return {"ms": statistics.median(ms), "low": min(ms), "high": max(ms),
            "model_share": statistics.median(r["model_share"] for r in rows),
            "valid_mass": statistics.mean(r["valid_mass"] for r in rows),
            "valid_runs": sum(r["valid_run"] for r in rows), "runs": len(rows)}


def compare_with_genlm(args, models: dict) -> dict:
    """The three tasks, genlm-control and awrs's ``models`` in turn each round; prints the table."""
    model_dir = ensure_converted(embedded_gguf_path())
    spec_tasks = tasks(next(iter(models.values())), list(range(args.seeds)))
    spec = {"model_dir": str(model_dir), "tasks": spec_tasks,
            "genlm": {"batch_size": 20, "timeout": args.genlm_timeout, "cache_prompt": True,
                      "keep_cache": args.genlm_keep_cache}}
    rows: dict[str, dict[str, list]] = {t["name"]: {} for t in spec_tasks}
    version = None
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}/{args.rounds}: genlm-control", file=sys.stderr, flush=True)
        results = run_genlm(spec)
        version = results.get("version")
        for task in spec_tasks:
            rows[task["name"]].setdefault("genlm-control", []).extend(
                genlm_summary(task, results["runs"][task["name"]]))
        for backend, model in models.items():
            print(f"round {round_ + 1}/{args.rounds}: awrs on {model.backend}", file=sys.stderr, flush=True)
            awrs.generate(model, spec_tasks[0]["prompt_ids"], awrs.Regex("a"), particles=2, max_tokens=2, seed=0)
            for task in spec_tasks:
                rows[task["name"]].setdefault(f"awrs ({backend})", []).extend(run_awrs(model, task))

    figures = {name: {who: summary(r) for who, r in by.items()} for name, by in rows.items()}
    print(f"\ngenlm-control {version} vs awrs {awrs.__version__}; 10 particles; {args.seeds} seeds x "
          f"{args.rounds} rounds per cell; ms per particle-token: median (range)\n")
    print("| task | library | ms per particle-token | model share | valid mass | runs with a valid text "
          "| speed-up vs genlm-control |")
    print("|---|---|---|---|---|---|---|")
    for name, by in figures.items():
        base = by["genlm-control"]["ms"]
        for who, f in by.items():
            speedup = "1" if who == "genlm-control" else f"{base / f['ms']:.1f}×"
            print(f"| {name} | {who} | {f['ms']:.2f} ({f['low']:.2f}–{f['high']:.2f}) | "
                  f"{100 * f['model_share']:.0f} % | {f['valid_mass']:.2f} | {f['valid_runs']}/{f['runs']} "
                  f"| {speedup} |")
    return {"genlm_version": version, "figures": figures, "runs": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", nargs="+", choices=["genlm", "vllm"], default=DEFAULT_PEERS,
                        help="what to compare awrs with: genlm-control (the three tasks) and awrs on vLLM "
                             "(the scaling task; default: both where .venv-vllm exists, else genlm)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per task (0, 1, ...)")
    parser.add_argument("--rounds", type=int, default=2, help="times each library runs every task")
    parser.add_argument("--backends", nargs="+", default=["hf", "llamacpp"],
                        help="awrs backends to run against genlm-control")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for llama.cpp and vLLM (default: each backend's own)")
    parser.add_argument("--genlm-timeout", type=float, default=0.02,
                        help="genlm-control's auto-batching wait in seconds (its default: 0.02)")
    parser.add_argument("--genlm-keep-cache", action="store_true",
                        help="keep genlm-control's output cache across runs (later seeds reuse earlier ones' "
                             "evaluations); by default each run starts cold, like awrs's")
    parser.add_argument("--vllm-particles", type=int, nargs="+", default=[1, 10, 64],
                        help="particle counts for the vLLM comparison")
    parser.add_argument("--vllm-dtype", nargs="+", default=["float32"], choices=list(DTYPES),
                        help="vLLM's weight types, a column each (default: float32)")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args()

    backends = list(dict.fromkeys([*(args.backends if "genlm" in args.peers else []),
                                   *(["llamacpp"] if "vllm" in args.peers else [])]))
    models = {backend: awrs.load_model(backend=backend, **({"n_threads": args.threads}
                                                           if args.threads and backend == "llamacpp" else {}))
              for backend in backends}
    report: dict = {}
    if "genlm" in args.peers:
        report.update(compare_with_genlm(args, {b: models[b] for b in args.backends}))
    if "vllm" in args.peers:
        figures, labels = compare_with_vllm(models["llamacpp"], args.vllm_particles, seeds=args.seeds,
                                            rounds=args.rounds, threads=args.threads, dtypes=args.vllm_dtype)
        print("\n" + format_vllm_table(figures, labels, seeds=args.seeds, rounds=args.rounds, threads=args.threads))
        report["vllm"] = {"labels": labels, "figures": figures}
    if args.json:
        Path(args.json).write_text(json.dumps(report), encoding="utf-8")


if __name__ == "__main__":
    main()
