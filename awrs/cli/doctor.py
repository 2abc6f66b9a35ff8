"""``awrs doctor``: what a bug report needs, in one paste.

Python and awrs versions, the optional extras that import, each backend's load and one-token
decode time, the CPU features llama.cpp was built for against those the machine reports, how
busy other programs keep the cores (which slows llama.cpp), and where the caches live. A
backend that fails is reported, never raised: the point of this command is to work on a
broken installation.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
import time
from collections.abc import Callable

EXTRAS = {
    "hf": ("torch", "transformers", "gguf"),
    "llamacpp": ("llama_cpp",),
    "json": ("jsonschema",),
    "grammar": ("llguidance", "lark"),
    "smiles": ("partialsmiles", "rdkit"),
    "server": ("fastapi", "uvicorn"),
    "eval": ("matplotlib",),
    "ray": ("ray",),
    "docs": ("mkdocs", "mktestdocs"),
    "test": ("pytest", "hypothesis"),
}
DISTRIBUTIONS = {"llama_cpp": "llama-cpp-python"}  # where the distribution's name is not the module's
CPU_FEATURES = ("avx", "avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                "amx_tile", "amx_int8", "amx_bf16")


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def _vllm_line() -> str:
    """Whether the vllm backend runs here, or where its own environment (.venv-vllm) is."""
    version = _version("vllm")
    if version is not None:
        return f"vLLM: {version} in this environment (--backend vllm)"
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[1]
    venv = checkout / ".venv-vllm"
    if (venv / ".awrs-vllm-installed").is_file():
        return f"vLLM: not in this environment; {venv} has it (use {venv / 'bin' / 'awrs'} with --backend vllm)"
    if venv.is_dir():
        return f"vLLM: {venv} exists but its install did not finish (run make setup-vllm again)"
    return "vLLM: not installed (make setup-vllm builds .venv-vllm, its own environment)"


def _timed_backend(backend: str) -> str:
    from ..models import load_model

    start = time.perf_counter()
    try:
        model = load_model(backend=backend, verbose=False)
    except Exception as err:  # noqa: BLE001 - reported, not raised
        return f"unavailable: {err}"
    loaded = time.perf_counter() - start
    prompt = model.encode("The colour of the sky is")
    start = time.perf_counter()
    session = model.open(prompt, 1)
    session.logprobs()
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    session.step([0], [int(prompt[-1])])
    session.logprobs()
    step = time.perf_counter() - start
    session.close()
    weights = f" ({model.weights})" if model.weights else ""
    return (f"{model.name}{weights} loads in {loaded:.2f} s; prompt ({len(prompt)} tokens) {prefill * 1e3:.0f} ms; "
            f"one-token decode {step * 1e3:.1f} ms")


def _llamacpp_build() -> list[str]:
    from ..models.llamacpp_build import cpu_library, host_cpu_flags, instruction_families, recorded_flags
    from ..models.llamacpp_probe import missing_cpu_features

    library = cpu_library()
    if library is None:
        return ["llama.cpp build: not installed (make setup-llamacpp)"]
    lines = [f"llama.cpp library: {library}"]
    flags = recorded_flags()
    lines.append(f"llama.cpp built for: {flags.get('LLAMA_CPU', 'unknown (not built by make setup-llamacpp)')}"
                 + (f" ({flags['CMAKE_ARGS']})" if "CMAKE_ARGS" in flags else ""))
    if flags.get("CPU_FEATURES"):
        unsupported = missing_cpu_features(flags, host_cpu_flags())
        verdict = "all reported by this CPU" if unsupported is None else unsupported.message()
        lines.append(f"llama.cpp needs CPU features: {flags['CPU_FEATURES']} ({verdict})")
    try:
        found = instruction_families(library)
        lines.append(f"llama.cpp instructions: {found['amx']} AMX tile, {found['avx512']} AVX-512 (zmm)")
    except (OSError, FileNotFoundError) as err:
        lines.append(f"llama.cpp instructions: not checked ({err})")
    try:
        from ..models.llamacpp_lib import llama as _llama

        info = _llama().llama_print_system_info().decode(errors="replace").strip()
        lines.append(f"llama.cpp system info: {info}")
    except Exception as err:  # noqa: BLE001
        lines.append(f"llama.cpp system info: unavailable ({err})")
    return lines


def machine_load(watch=None) -> list[str]:
    """How busy other programs keep the cores, and what that does to llama.cpp's default
    threads (``watch``: a :class:`~awrs.models.cpu_load.LoadWatch`, injectable for tests)."""
    from ..models.cpu_load import LoadWatch, usable_cores

    watch = watch or LoadWatch()
    threads = watch.threads(wait=True)
    cores = len(usable_cores())
    if watch.busy is None:
        return [f"machine load: not measurable here; llama.cpp's default: {threads} threads of {cores} cores"]
    lines = [f"machine load: other programs use {watch.busy:.2f} of {cores} cores; "
             f"llama.cpp's default: {threads} thread{'s' if threads > 1 else ''}"]
    if threads < cores:
        lines.append(
            "machine busy: llama.cpp's threads wait for each other at every step, so a thread that "
            "shares its core with another program stalls the rest (many times slower); awrs uses fewer "
            "threads while the load lasts (--threads N overrides), and the timings below are slower too")
    return lines


def report(*, backends: bool = True, out: Callable[[str], None] = print, load_watch=None) -> None:
    """Print the report line by line (``backends=False`` skips loading models; ``load_watch``
    replaces the machine's load readings, for tests)."""
    from .. import __version__
    from ..models.embedded import cache_dir
    from ..models.llamacpp_build import host_cpu_flags

    out(f"awrs {__version__} on Python {platform.python_version()} ({sys.executable})")
    out(f"platform: {platform.platform()}; {platform.machine()}")
    for extra, modules in EXTRAS.items():
        versions = [f"{m} {_version(m) or 'missing'}" for m in modules]
        ok = all(_version(m) for m in modules)
        out(f"extra [{extra}]: {'yes' if ok else 'no'} ({', '.join(versions)})")
    flags = host_cpu_flags()
    out("CPU reports: " + (" ".join(f for f in CPU_FEATURES if f in flags) or "unknown"))
    for line in _llamacpp_build():
        out(line)
    for line in machine_load(load_watch):
        out(line)
    out(_vllm_line())
    out(f"model cache: {cache_dir()} (converted models, llama.cpp probe verdicts; $AWRS_CACHE_DIR moves it)")
    if backends:
        for backend in ("hf", "llamacpp", *(("vllm",) if _version("vllm") else ())):
            out(f"backend {backend}: {_timed_backend(backend)}")
