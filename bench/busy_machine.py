"""llama.cpp's speed on an idle machine and on one where another process keeps a core busy.

    .venv/bin/python bench/busy_machine.py [--conditions idle busy] [--settings default 1 2]
        [--particles 10] [--max-tokens 30] [--seeds 3] [--duty 1.0]

llama.cpp's threads wait for each other after every step of the forward pass, so a thread whose
core another program holds stalls the rest. For each condition -- ``idle`` (nothing started)
and ``busy`` (a process this script starts spins on one core, ``--duty`` of the time) -- and
each thread setting (``default``: what awrs picks; a number: ``--threads N``; ``N:passive``: N
threads with ``OMP_WAIT_POLICY=PASSIVE``, idle threads sleeping instead of spinning), a fresh
process loads the embedded model on llama.cpp and runs AWRS-SMC on the regex task of ``awrs
bench --scaling`` (one warm-up run, then ``--seeds`` runs). Prints a Markdown table: the load
other processes put on the machine (in cores: the spinner and anything already running;
measured before the runs and, in brackets, while the setting ran), the threads each setting
used, and the median ms per particle-token (range), over the best setting's in the same
condition.

``idle`` (the table's "as found") is only idle where nothing else runs: the measured load says
whether it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = """
import sys, time
duty, period = float(sys.argv[1]), 0.01
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < period * duty:
        pass
    if duty < 1:
        time.sleep(period * (1 - duty))
"""


def worker(setting: str, particles: int, max_tokens: int, seeds: int) -> dict:
    """One setting's figures, in this process (the parent starts one process per setting)."""
    from awrs.benchmarks.scaling import measure_scaling
    from awrs.models import load_model

    threads = None if setting == "default" else int(setting.split(":")[0])
    model = load_model(backend="llamacpp", verbose=False, n_threads=threads)
    row = measure_scaling(model, (particles,), seeds=seeds, max_tokens=max_tokens)[0]
    return {"threads": model.n_threads, "ms": row["ms_per_particle_token"], "range": row["range"]}


def with_children(reading):
    """A reading whose own CPU time includes the settings' finished processes: their load is
    this script's, not other programs'."""
    times = os.times()
    return dataclasses.replace(reading, own_seconds=reading.own_seconds + times.children_user
                               + times.children_system)


def run_setting(setting: str, args: argparse.Namespace) -> dict:
    """One setting's figures from a fresh process, and other programs' load while it ran."""
    from awrs.models.cpu_load import others_busy_cores, read_cpu

    before = with_children(read_cpu())
    figures = _run_worker(setting, args)
    figures["others_during"] = others_busy_cores(before, with_children(read_cpu()))
    return figures


def _run_worker(setting: str, args: argparse.Namespace) -> dict:
    paths = [str(ROOT), os.environ.get("PYTHONPATH")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)))
    if setting.endswith(":passive"):
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # libgomp reads it once, at load: a fresh process
    command = [sys.executable, __file__, "--worker", setting, "--particles", str(args.particles),
               "--max-tokens", str(args.max_tokens), "--seeds", str(args.seeds)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"threads": "?", "ms": float("inf"), "range": [float("inf")] * 2}
    if done.returncode != 0:
        raise SystemExit(f"busy_machine: setting {setting} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_condition(condition: str, args: argparse.Namespace) -> tuple[float, dict[str, dict]]:
    """Other processes' load (cores) and each setting's figures, a spinner running if busy."""
    from awrs.models.cpu_load import LoadWatch

    spinner = None
    if condition == "busy":
        spinner = subprocess.Popen([sys.executable, "-c", SPIN, str(args.duty)])
    try:
        watch = LoadWatch()
        time.sleep(1.0)  # the spinner settles; a second of readings
        watch.threads()
        figures = {}
        for setting in args.settings:
            figures[setting] = run_setting(setting, args)
            print(f"busy_machine: {condition} {setting}: {figures[setting]['ms']:.2f} ms per particle-token "
                  f"({figures[setting]['threads']} threads)", file=sys.stderr, flush=True)
        return watch.busy or 0.0, figures
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()


def table(results: dict[str, tuple[float, dict[str, dict]]], args: argparse.Namespace) -> str:
    lines = [f"embedded model, llama.cpp, AWRS-SMC, {args.particles} particles, {args.max_tokens} tokens, "
             f"{args.seeds} seeds; ms per particle-token: median (range)", "",
             "| machine | others' load before (during) | threads setting | threads used "
             "| ms per particle-token | × best |",
             "|---|---|---|---|---|---|"]
    started = {"idle": "as found", "busy": "+ 1 spinning process"}
    for condition, (load, figures) in results.items():
        best = min(f["ms"] for f in figures.values())
        for setting, f in figures.items():
            low, high = f["range"]
            during = f["others_during"]
            lines.append(f"| {started[condition]} | {load:.2f} ({during:.2f}) of {os.cpu_count()} | "
                         f"{setting} | {f['threads']} | {f['ms']:.2f} ({low:.2f}–{high:.2f}) | "
                         f"{f['ms'] / best:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", nargs="+", choices=["idle", "busy"], default=["idle", "busy"])
    parser.add_argument("--settings", nargs="+", default=["default", "1", "2"],
                        help="default, a thread count, or N:passive (default: default 1 2)")
    parser.add_argument("--particles", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--duty", type=float, default=1.0, help="the spinner's share of its core (busy)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one setting may take")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.particles, args.max_tokens, args.seeds)))
        return
    results = {condition: measure_condition(condition, args) for condition in args.conditions}
    print(table(results, args))


if __name__ == "__main__":
    main()
