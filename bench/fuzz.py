"""``make fuzz MINUTES=N``: crash fuzzing, then differential rounds, ending within N minutes.

    python bench/fuzz.py MINUTES

1. Crash fuzzing (``bench/fuzz_crash.py``: atheris, coverage-guided) of the regex, JSON Schema
   and Lark grammar compilers and their advance, for half of the time, a third of it each (at
   least 10 s each; corpora kept in ``$AWRS_FUZZ_CORPUS``, default ``~/.cache/awrs/fuzz``, so
   later runs start where earlier ones got). Skipped when atheris is not installed.
2. The differential tests (``tests/test_differential_*.py``) round after round for the rest of
   the time, each with a new seed and up to ``AWRS_FUZZ_EXAMPLES`` (200) examples per pattern
   or schema: each round is sized to the time left, at the pace the previous round kept (the
   first guess: 200 examples took 11 minutes on 2 cores).

Every part is stopped at the deadline: it is interrupted (pytest and libFuzzer then report what
they found so far; hypothesis keeps a failing example in ``.hypothesis`` for the next run) and
killed ``GRACE_S`` later, so the whole run ends within N minutes and a few seconds. A finding
stops the run and names the input (``crash-*`` file) or the log with hypothesis's minimal
examples: make each a regression test. Exit status 1 on a finding.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("regex", "json", "grammar")
GRACE_S = 10.0  # from the interrupt to the kill: pytest's summary, libFuzzer's stats
MIN_ROUND_S = 20.0  # less time left than this starts no round: collecting the tests alone takes seconds


@dataclass
class Pace:
    """How long a differential round takes: a fixed part (collecting the tests, loading the
    patterns and schemas, compiling grammars) and a part per example, learnt from each round
    that ran to its end."""

    # first guesses, on a 2-core machine with one core busy: a round of 1 example took 45 s,
    # one of 200 examples per pattern or schema about 11 minutes
    fixed_s: float = 45.0
    per_example_s: float = 3.1

    def examples_for(self, seconds: float, most: int) -> int:
        """The examples per pattern or schema that fit in ``seconds``, from 1 to ``most``."""
        return max(1, min(most, int((seconds - self.fixed_s) / self.per_example_s)))

    def learn(self, examples: int, seconds: float) -> None:
        self.per_example_s = max((seconds - self.fixed_s) / examples, 0.01)


@dataclass(frozen=True)
class Finished:
    """How a part ended: ``code`` (None: stopped at the deadline) and its log's last words."""

    code: int | None
    summary: str

    @property
    def found(self) -> bool:
        # an interrupted pytest still lists the tests that failed before the interrupt
        return (self.code not in (0, None)) or "failed" in self.summary or "FAILED" in self.summary


def run_until(command: list[str], log: Path, deadline: float, *, env: dict | None = None,
              cwd: Path | None = None, clock: Callable[[], float] = time.time) -> Finished:
    """Run ``command`` (output to ``log``) until it ends or ``deadline`` (``clock`` time) comes."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            code: int | None = process.wait(timeout=max(deadline - clock(), 0.0))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            code = None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    summary = [line for line in lines if re.search(r"^FAILED|\bpassed\b|\bfailed\b|^Done|Uncaught", line)]
    return Finished(code, "\n".join(summary[-20:]) or (lines[-1] if lines else ""))


def differential_rounds(deadline: float, most: int, run_round: Callable[[int, int, float], Finished], *,
                        clock: Callable[[], float] = time.time, pace: Pace | None = None,
                        say: Callable[[str], None] = print) -> tuple[int, bool]:
    """Rounds while at least ``MIN_ROUND_S`` are left, each sized to the time left;
    ``run_round(round, examples, deadline)`` runs one. Returns (rounds run, found something)."""
    pace = pace or Pace()
    rounds = 0
    while deadline - clock() >= MIN_ROUND_S:
        rounds += 1
        left = deadline - clock()
        examples = pace.examples_for(left - GRACE_S, most)
        say(f"round {rounds}: {examples} example{'s' if examples > 1 else ''} per pattern or schema "
            f"({left:.0f} s left)")
        start = clock()
        finished = run_round(rounds, examples, deadline)
        if finished.code is not None and not finished.found:
            pace.learn(examples, clock() - start)
        stopped = "stopped at the deadline; " if finished.code is None else ""
        say(stopped + (finished.summary or "no output"))
        if finished.found:
            return rounds, True
    return rounds, False


def crash_fuzzing(python: str, deadline: float, *, clock: Callable[[], float] = time.time) -> bool:
    """The crash-fuzzing part, until ``deadline`` (at least 10 s a target); True on a finding."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    corpus = Path(os.environ.get("AWRS_FUZZ_CORPUS") or cache / "awrs" / "fuzz")
    work = Path(tempfile.gettempdir())
    for k, target in enumerate(TARGETS):
        seconds = max(int((deadline - clock()) / (len(TARGETS) - k)), 10)
        log = work / f"awrs-fuzz-crash-{target}.log"
        print(f"crash fuzzing {target} for {seconds} s (corpus {corpus / target})", flush=True)
        command = [python, str(ROOT / "bench" / "fuzz_crash.py"), target, str(seconds),
                   "--seed", str(int(clock()) % 1_000_000), "--corpus", str(corpus / target)]
        # libFuzzer counts its time from its start; the stop also covers a slow corpus load
        finished = run_until(command, log, clock() + seconds + 5, cwd=work, clock=clock)
        if finished.code not in (0, None):
            print(finished.summary)
            print(f"fuzz: crash fuzzing {target} found an input (written to {work}/crash-*); log: {log}")
            return True
        print(finished.summary if finished.code == 0 else f"stopped at its deadline ({log})")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", type=float, help="the whole run's time")
    args = parser.parse_args(argv)
    start = time.time()
    deadline = start + 60 * args.minutes
    python = sys.executable
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("crash fuzzing skipped: atheris is not installed (pip install atheris)")
    else:
        if crash_fuzzing(python, start + 30 * args.minutes):
            return 1
    most = int(os.environ.get("AWRS_FUZZ_EXAMPLES", "200"))
    logs = Path(tempfile.gettempdir())

    def run_round(number: int, examples: int, until: float) -> Finished:
        seed = int(time.time()) % 1_000_000 + number
        env = dict(os.environ, AWRS_FUZZ_SEED=str(seed), AWRS_FUZZ_EXAMPLES=str(examples),
                   AWRS_FUZZ_SCHEMAS=os.environ.get("AWRS_FUZZ_SCHEMAS", "100"),
                   AWRS_FUZZ_PATTERNS=os.environ.get("AWRS_FUZZ_PATTERNS", "1000"))
        log = logs / f"awrs-fuzz-round-{seed}.log"
        tests = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_differential_*.py"))
        finished = run_until([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                             log, until - GRACE_S, env=env, cwd=ROOT)
        if finished.found:
            print(f"fuzz: round {number} failed; hypothesis's minimal examples are in {log} "
                  f"(rerun with AWRS_FUZZ_SEED={seed} AWRS_FUZZ_EXAMPLES={examples})")
        return finished

    rounds, found = differential_rounds(deadline, most, run_round)
    if found:
        return 1
    print(f"fuzz: no findings in {time.time() - start:.0f} s; {rounds} differential rounds, "
          "every test that ran passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
