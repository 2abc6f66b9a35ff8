"""How many CPU threads llama.cpp should use on a machine that other programs keep busy.

llama.cpp's threads meet at a barrier after every step of the forward pass, so one thread
that the operating system takes off its core stalls all the others. With two threads on two
cores and another program spinning on one of them, a 10-particle step of the embedded model
was many times slower than with one thread (docs/performance.md, "A busy machine"). The
default is therefore one thread per core that other programs leave free, at least one.

"Busy" is measured, not guessed: the CPU time that other processes used on the cores this
process may run on, over a window (``/proc/stat`` less this process's own CPU time), in cores.
Outside Linux the one-minute load average stands in for it. The thread count only changes
speed: llama.cpp's CPU kernels give the same logits, bit for bit, at any thread count (each dot
product is one thread's; seen at 1, 2 and 3 threads for F16, Q4_0, Q4_1 and Q4_K weights, and
kept in check for F16 by tests/test_llamacpp.py), so a choice that depends on the machine's
load never changes a sample. The first measurement waits until the window is ``MIN_WINDOW_S``
long, which a model's load usually covers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

# A core counts as taken once other programs use this share of it: a second thread gains at
# most about 1.8x on an idle core, but loses 3-50x when its core is shared, so err towards fewer.
BUSY_SHARE = 0.3
MIN_WINDOW_S = 0.2  # shorter windows hold too few clock ticks (100 per second) to count


@dataclass(frozen=True)
class CpuReading:
    """Cumulative CPU counters at one moment: clock ticks that every process spent busy and in
    all on the cores this process may use, this process's own CPU seconds, and when."""

    busy_ticks: int
    total_ticks: int
    own_seconds: float
    at: float
    cores: int


def usable_cores() -> set[int]:
    """The cores this process may run on (all of them where affinity is unknown)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def read_cpu(stat_text: str | None = None) -> CpuReading | None:
    """The counters now, from ``/proc/stat`` (or ``stat_text``); None where it cannot be read."""
    if stat_text is None:
        try:
            with open("/proc/stat", encoding="ascii") as handle:
                stat_text = handle.read()
        except OSError:
            return None
    cores = usable_cores()
    busy = total = 0
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores):
            continue
        # user nice system idle iowait irq softirq steal (guest time is inside user already)
        ticks = [int(x) for x in rest.split()[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    if total == 0:
        return None
    own = os.times()
    return CpuReading(busy, total, own.user + own.system, time.monotonic(), len(cores))


def others_busy_cores(before: CpuReading, after: CpuReading) -> float:
    """How many cores other processes kept busy between two readings (this process's own CPU
    time taken out), from 0 to the usable cores."""
    ticks = after.total_ticks - before.total_ticks
    if ticks <= 0:
        return 0.0
    per_core_ticks = ticks / after.cores  # the window's length, in ticks of one core
    tick_seconds = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
    own_ticks = (after.own_seconds - before.own_seconds) / tick_seconds
    others = (after.busy_ticks - before.busy_ticks) - own_ticks
    return min(max(others / per_core_ticks, 0.0), float(after.cores))


def threads_for(cores: int, busy: float) -> int:
    """One thread per core that other programs leave free, at least one: a core counts as
    taken once they use ``BUSY_SHARE`` of it (2 cores, 1.0 busy -> 1; 0.2 busy -> 2)."""
    taken = max(math.ceil(busy - BUSY_SHARE), 0)
    return max(1, cores - taken)


class LoadWatch:
    """The default thread count, kept up to date: ``threads()`` measures other programs' load
    since the previous call (waiting until ``MIN_WINDOW_S`` has passed only on the first) and
    returns the count :func:`threads_for` gives. ``read`` and ``sleep`` are injectable, so
    tests can replay readings without a clock."""

    def __init__(self, read=read_cpu, sleep=time.sleep) -> None:
        self._read, self._sleep = read, sleep
        self._last = read()
        self.busy: float | None = None  # the last measurement, in cores (None: not measurable)

    def threads(self, *, wait: bool = False) -> int:
        cores = len(usable_cores())
        now = self._read()
        if self._last is None or now is None:
            self.busy = _load_average_busy()
            return threads_for(cores, self.busy) if self.busy is not None else cores
        if now.at - self._last.at < MIN_WINDOW_S:
            if not wait and self.busy is not None:
                return threads_for(now.cores, self.busy)  # too soon to measure again
            self._sleep(MIN_WINDOW_S - (now.at - self._last.at))
            now = self._read() or now
        self.busy = others_busy_cores(self._last, now)
        self._last = now
        return threads_for(now.cores, self.busy)


def _load_average_busy() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
