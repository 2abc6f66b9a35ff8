"""Is the installed llama.cpp build safe to run here? Asked once per library file, in a subprocess.

A llama.cpp library compiled for another CPU (or with ``-march=native`` on a machine whose CPUID
reports AMX while its hypervisor does not enable AMX tiles) dies with SIGILL or SIGSEGV on the
first matrix product, taking the whole process with it. So before the first use of a build,
awrs decodes one token in a child process: a crash there is a verdict, not a dead server. The
verdict is cached per library file (path, size, modification time) in the awrs cache, so the
probe runs once per build and machine, not once per process. Before that, the CPU features the
build recorded (``make setup-llamacpp``) are compared with the ones this CPU reports: a library
built for AVX-512 on another machine is refused with the features it lacks, without a crash.

``AWRS_LLAMACPP_SIMULATE=crash`` (a segmentation fault) or ``=fail`` (an error exit) makes the
child fail on purpose, without touching llama.cpp: that is how the tests exercise the fallback.
Simulated verdicts are never cached.

Not here: loading models (:mod:`awrs.models.llamacpp`), choosing the backend (:mod:`awrs.models`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import llamacpp_build
from .embedded import cache_dir

SIMULATE_VARIABLE = "AWRS_LLAMACPP_SIMULATE"
PROBE_TIMEOUT_SECONDS = 180.0
VERDICT_FILE = "llamacpp-probe.json"
REBUILD_HINT = "rebuild it portably with `make setup-llamacpp` (see docs/models.md, A portable build) or use --backend hf"

_CHILD = r"""
import os, sys
mode = os.environ.get("AWRS_LLAMACPP_SIMULATE", "")
if mode == "crash":
    import ctypes
    ctypes.string_at(0)  # a real segmentation fault, as a miscompiled kernel would give
if mode == "fail":
    sys.exit("simulated failure of the llama.cpp build")
from awrs.models.llamacpp import LlamaCppModel
model = LlamaCppModel(sys.argv[1], n_ctx=64, n_seq_max=1, n_threads=1)
session = model.open([1, 2, 3], 1)
logp = session.logprobs()
assert logp.shape[0] == 1 and logp.shape[1] > 0
print("ok")
"""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "" when ok; what failed otherwise (one line)
    failure: str = "failed its first decode"
    hint: str = REBUILD_HINT

    def message(self) -> str:
        return f"the installed llama.cpp build {self.failure} ({self.reason}); {self.hint}"


def missing_cpu_features(flags: dict[str, str], cpu_flags: set[str]) -> Verdict | None:
    """A failed verdict if the build's recorded ``CPU_FEATURES`` are not all in ``cpu_flags``
    (None when they are, or when either side is unknown)."""
    needed = flags.get("CPU_FEATURES", "").split()
    missing = [feature for feature in needed if feature not in cpu_flags]
    if not cpu_flags or not missing:
        return None
    built_for = flags.get("LLAMA_CPU", "another CPU")
    return Verdict(False, f"built for {built_for}; this CPU lacks {' '.join(missing)}", "cannot run on this CPU",
                   "rebuild it for this CPU with `make setup-llamacpp` (LLAMA_CPU=auto picks what this "
                   "CPU has) or use --backend hf")


def _library_key(files: list[Path]) -> str:
    parts = []
    for path in files:
        stat = path.stat()
        parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def _read_verdicts(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _describe(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"the test process died with {name}"
    last = [line.strip() for line in stderr.splitlines() if line.strip()]
    return f"the test process exited with code {returncode}: {last[-1] if last else 'no message'}"


def run_probe(gguf: Path, *, timeout: float = PROBE_TIMEOUT_SECONDS) -> Verdict:
    """Decode one token with ``gguf`` in a child process; never raises for a crash."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(gguf)],
            env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False,
        )
    except subprocess.TimeoutExpired:
        return Verdict(False, f"the test decode did not finish in {timeout:.0f} s")
    if done.returncode == 0 and "ok" in done.stdout:
        return Verdict(True, "")
    return Verdict(False, _describe(done.returncode, done.stderr))


def check_build(gguf: Path) -> Verdict:
    """The cached verdict for the installed build, probing it first if it is new."""
    simulated = os.environ.get(SIMULATE_VARIABLE, "")
    files = llamacpp_build.library_files()
    if simulated or not files:
        return run_probe(gguf)
    unsupported = missing_cpu_features(llamacpp_build.recorded_flags(), llamacpp_build.host_cpu_flags())
    if unsupported is not None:
        return unsupported
    key = _library_key(files)
    store = cache_dir() / VERDICT_FILE
    verdicts = _read_verdicts(store)
    if key in verdicts:
        cached = verdicts[key]
        return Verdict(bool(cached.get("ok")), str(cached.get("reason", "")))
    verdict = run_probe(gguf)
    verdicts[key] = {"ok": verdict.ok, "reason": verdict.reason}
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(verdicts))
        tmp.replace(store)
    except OSError:
        pass  # an unwritable cache only means probing again next time
    return verdict
