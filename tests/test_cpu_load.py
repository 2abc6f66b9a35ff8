"""The llamacpp backend's default thread count on a busy machine: one thread per core that
other programs leave free. Readings are injected, so nothing here depends on the machine's
load or on a clock."""

from __future__ import annotations

import pytest

from awrs.models import cpu_load
from awrs.models.cpu_load import CpuReading, LoadWatch, others_busy_cores, read_cpu, threads_for

STAT = """cpu  500 0 100 1400 0 0 0 0 0 0
cpu0 100 0 50 850 0 0 0 0 0 0
cpu1 400 0 50 550 0 0 0 0 0 0
cpu2 900 0 100 0 0 0 0 0 0 0
intr 12345
ctxt 999
"""


def reading(busy: int, total: int, at: float, own: float = 0.0, cores: int = 4) -> CpuReading:
    return CpuReading(busy_ticks=busy, total_ticks=total, own_seconds=own, at=at, cores=cores)


@pytest.mark.parametrize(("cores", "busy", "threads"), [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.5, 1), (2, 1.0, 1), (2, 2.0, 1),
    (4, 1.0, 3), (4, 1.3, 3), (4, 1.6, 2), (8, 0.0, 8), (1, 1.0, 1),
])
def test_one_thread_per_core_that_others_leave_free(cores, busy, threads):
    assert threads_for(cores, busy) == threads


def test_proc_stat_counts_only_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.setattr(cpu_load, "usable_cores", lambda: {0, 1})
    got = read_cpu(STAT)
    assert (got.busy_ticks, got.total_ticks, got.cores) == (150 + 450, 1000 + 1000, 2)


def test_others_load_leaves_out_this_process_own_cpu_time(monkeypatch):
    monkeypatch.setattr(cpu_load.os, "sysconf", lambda name: 100)  # 100 ticks per second
    # 1 s on 4 cores: 400 ticks, 150 of them busy, 50 (0.5 s) of those ours
    before, after = reading(1000, 10_000, at=0.0), reading(1150, 10_400, at=1.0, own=0.5)
    assert others_busy_cores(before, after) == pytest.approx(1.0)
    assert others_busy_cores(after, after) == 0.0


def scripted(readings):
    """A ``read`` that replays readings, and a ``sleep`` that only records."""
    replay = iter(readings)
    slept: list[float] = []
    return (lambda: next(replay)), slept.append, slept


def test_the_watch_measures_over_a_window_and_follows_the_load(monkeypatch):
    monkeypatch.setattr(cpu_load, "usable_cores", lambda: {0, 1, 2, 3})
    read, sleep, slept = scripted([
        reading(0, 0, at=0.0),
        reading(5, 20, at=0.05),  # too short a window: it waits the rest, then reads again
        reading(100, 400, at=1.0),  # one core of four busy
        reading(100, 400, at=1.1),  # too soon again: the last figure stands
        reading(100, 800, at=2.0),  # now idle
    ])
    watch = LoadWatch(read=read, sleep=sleep)
    assert watch.threads(wait=True) == 3 and watch.busy == pytest.approx(1.0)
    assert slept == [pytest.approx(cpu_load.MIN_WINDOW_S - 0.05)]
    assert watch.threads() == 3
    assert watch.threads() == 4 and watch.busy == 0.0


def test_without_proc_stat_the_load_average_stands_in(monkeypatch):
    monkeypatch.setattr(cpu_load, "usable_cores", lambda: {0, 1})
    monkeypatch.setattr(cpu_load.os, "getloadavg", lambda: (1.0, 0.5, 0.2))
    watch = LoadWatch(read=lambda: None, sleep=lambda s: None)
    assert watch.threads(wait=True) == 1 and watch.busy == 1.0


def test_the_llamacpp_default_uses_the_free_cores_and_follows_the_load(monkeypatch):
    from conftest import llamacpp_unusable

    if (unusable := llamacpp_unusable()) is not None:
        pytest.skip(f"llama-cpp-python is not usable: {unusable}")
    from awrs.models import llamacpp
    from awrs.models.embedded import embedded_gguf_path

    monkeypatch.setattr(cpu_load, "usable_cores", lambda: {0, 1, 2, 3})
    monkeypatch.setattr(cpu_load.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    read, sleep, _ = scripted([reading(0, 0, at=0.0), reading(100, 400, at=1.0), reading(100, 800, at=2.0)])
    monkeypatch.setattr(llamacpp, "LoadWatch", lambda: LoadWatch(read=read, sleep=sleep))
    model = llamacpp.LlamaCppModel(embedded_gguf_path(), n_ctx=256, n_seq_max=2)
    assert model.n_threads == 3  # one core of four taken by another program
    assert model._lib.llama_n_threads(model._ctx) == 3
    model.open(model.encode("Hi"), 1).close()  # the machine went idle meanwhile
    assert model.n_threads == 4 and model._lib.llama_n_threads(model._ctx) == 4
    fixed = llamacpp.LlamaCppModel(embedded_gguf_path(), n_ctx=256, n_seq_max=1, n_threads=2)
    fixed.open(fixed.encode("Hi"), 1).close()
    assert fixed.n_threads == 2


def test_doctor_says_when_the_machine_is_busy(monkeypatch):
    from awrs.cli import doctor

    monkeypatch.setattr(cpu_load, "usable_cores", lambda: {0, 1})
    busy, idle = [], []
    read, sleep, _ = scripted([reading(0, 0, at=0.0, cores=2), reading(100, 200, at=1.0, cores=2)])
    doctor.report(backends=False, out=busy.append, load_watch=LoadWatch(read=read, sleep=sleep))
    assert "machine load: other programs use 1.00 of 2 cores; llama.cpp's default: 1 thread" in busy
    assert any(line.startswith("machine busy:") and "--threads" in line for line in busy)
    read, sleep, _ = scripted([reading(0, 0, at=0.0, cores=2), reading(10, 200, at=1.0, cores=2)])
    doctor.report(backends=False, out=idle.append, load_watch=LoadWatch(read=read, sleep=sleep))
    assert "machine load: other programs use 0.10 of 2 cores; llama.cpp's default: 2 threads" in idle
    assert not any(line.startswith("machine busy:") for line in idle)
