"""``make fuzz MINUTES=N`` ends within N minutes: each differential round is sized to the time
left and the last one is stopped at the deadline (bench/fuzz.py). The clock is simulated: a
round "takes" the time a fixed part and its examples cost, or runs until it is stopped."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "fuzz.py"


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("awrs_bench_fuzz", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["awrs_bench_fuzz"] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


class SimulatedRounds:
    """Rounds on a simulated clock: one costs ``fixed_s + per_example_s x examples`` seconds, or
    ends at the deadline it is given (plus the kill's grace) when it would run past it."""

    def __init__(self, fuzz, fixed_s: float, per_example_s: float, failing_round: int | None = None) -> None:
        self.fuzz, self.now = fuzz, 0.0
        self.fixed_s, self.per_example_s, self.failing_round = fixed_s, per_example_s, failing_round
        self.examples: list[int] = []

    def clock(self) -> float:
        return self.now

    def run_round(self, number: int, examples: int, deadline: float):
        self.examples.append(examples)
        takes = self.fixed_s + self.per_example_s * examples
        stop = deadline - self.fuzz.GRACE_S  # where bench/fuzz.py interrupts a round
        failed = number == self.failing_round
        if self.now + takes > stop:
            self.now = stop + self.fuzz.GRACE_S  # interrupted, then killed at the latest
            return self.fuzz.Finished(None, "1 failed, 3 passed" if failed else "4 passed")
        self.now += takes
        return self.fuzz.Finished(1 if failed else 0, "1 failed, 3 passed" if failed else "25 passed")


@pytest.mark.parametrize("minutes", [0.5, 1, 3, 10, 30])
def test_the_rounds_end_by_the_deadline_however_slow_a_round_is(fuzz, minutes):
    # the pace of the round that made the issue: 11 minutes for 200 examples
    sim = SimulatedRounds(fuzz, fixed_s=45, per_example_s=3.1)
    rounds, found = fuzz.differential_rounds(60 * minutes, 200, sim.run_round, clock=sim.clock,
                                             say=lambda _: None)
    assert not found and rounds >= 1
    assert sim.now <= 60 * minutes
    assert all(1 <= n <= 200 for n in sim.examples)
    if minutes <= 10:
        assert sim.examples[0] < 200  # sized to the time left, not the full budget


def test_the_pace_is_learnt_from_a_round_that_ran_to_its_end(fuzz):
    # rounds four times faster than the first guess: the second round is sized up
    guess = fuzz.Pace()
    sim = SimulatedRounds(fuzz, fixed_s=guess.fixed_s, per_example_s=guess.per_example_s / 4)
    fuzz.differential_rounds(600, 200, sim.run_round, clock=sim.clock, say=lambda _: None)
    assert sim.examples[0] == int((600 - fuzz.GRACE_S - guess.fixed_s) / guess.per_example_s)
    assert sim.examples[1] > sim.examples[0] and sim.now <= 600


def test_a_round_stopped_at_the_deadline_keeps_its_findings(fuzz):
    sim = SimulatedRounds(fuzz, fixed_s=30, per_example_s=100, failing_round=1)
    said: list[str] = []
    rounds, found = fuzz.differential_rounds(120, 200, sim.run_round, clock=sim.clock, say=said.append)
    assert (rounds, found) == (1, True)
    assert "stopped at the deadline; 1 failed, 3 passed" in said


def test_a_failing_round_stops_the_run(fuzz):
    sim = SimulatedRounds(fuzz, fixed_s=1, per_example_s=0.01, failing_round=2)
    assert fuzz.differential_rounds(600, 200, sim.run_round, clock=sim.clock, say=lambda _: None) == (2, True)


def test_too_little_time_left_starts_no_round(fuzz):
    sim = SimulatedRounds(fuzz, fixed_s=1, per_example_s=0.01)
    assert fuzz.differential_rounds(fuzz.MIN_ROUND_S - 1, 200, sim.run_round, clock=sim.clock,
                                    say=lambda _: None) == (0, False)


def test_a_command_past_its_deadline_is_interrupted_and_says_what_it_did(fuzz, tmp_path):
    script = ("import signal, time\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "print('3 passed, ready', flush=True)\ntry:\n    time.sleep(60)\n"
              "except KeyboardInterrupt:\n    print('interrupted: 3 passed, 1 failed')\n")
    log = tmp_path / "log"

    def deadline_has_come() -> float:
        """The deadline, once the command is ready for the interrupt (no clock involved)."""
        for _ in range(3000):
            if "ready" in log.read_text():
                break
            time.sleep(0.01)
        return 100.0

    finished = fuzz.run_until([sys.executable, "-c", script], log, 100.0, clock=deadline_has_come)
    assert finished.code is None and finished.found
    assert "interrupted: 3 passed, 1 failed" in finished.summary
