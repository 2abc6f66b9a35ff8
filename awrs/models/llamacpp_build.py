"""What the installed llama.cpp library was built for: its recorded flags and its instructions.

``make setup-llamacpp`` (``bench/llamacpp_build.sh``) writes the CMake flags it built with
beside the library, in ``awrs-build-flags.txt``. A library can also be checked directly: its
disassembly shows whether it holds AMX tile instructions (which fault where the OS has not
enabled AMX) or AVX-512 ones (an illegal instruction on CPUs without AVX-512).

Not here: running the library (:mod:`awrs.models.llamacpp_probe` does, in a subprocess).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

FLAGS_FILE = "awrs-build-flags.txt"
AMX_MNEMONICS = ("ldtilecfg", "sttilecfg", "tileloadd", "tileloaddt1", "tilestored", "tilerelease",
                 "tilezero", "tdpbssd", "tdpbsud", "tdpbusd", "tdpbuud", "tdpbf16ps", "tdpfp16ps")
_AMX = re.compile(r"\t(" + "|".join(AMX_MNEMONICS) + r")\b")
_ZMM = re.compile(r"%zmm\d")


def library_files() -> list[Path]:
    """The shared libraries of the installed llama-cpp-python, found without importing it."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return []
    lib_dir = Path(spec.origin).parent / "lib"
    return sorted(p for p in lib_dir.glob("lib*.so*") if p.is_file()) if lib_dir.is_dir() else []


def cpu_library() -> Path | None:
    """``libggml-cpu.so``, where llama.cpp's CPU kernels live (None if not installed)."""
    for path in library_files():
        if path.name.startswith("libggml-cpu"):
            return path
    return None


def recorded_flags() -> dict[str, str]:
    """The flags awrs's build script recorded (empty if the library was built some other way,
    or replaced since: the record names the library's SHA-256)."""
    cpu = cpu_library()
    if cpu is None:
        return {}
    path = cpu.parent / FLAGS_FILE
    if not path.is_file():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    flags = {key.strip(): value.strip() for key, value in pairs}
    if flags.get("LIBRARY_SHA256") != hashlib.sha256(cpu.read_bytes()).hexdigest():
        return {}  # the record belongs to another library (reinstalled some other way)
    return flags


def instruction_families(library: Path) -> dict[str, int]:
    """How many AMX tile and AVX-512 (zmm) instructions ``library`` holds, by disassembly.

    Needs ``objdump`` (binutils); raises FileNotFoundError without it.
    """
    objdump = shutil.which("objdump")
    if objdump is None:
        raise FileNotFoundError("objdump (binutils) is needed to disassemble the llama.cpp library")
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True,
    ).stdout
    return {"amx": len(_AMX.findall(text)), "avx512": len(_ZMM.findall(text))}


def host_cpu_flags() -> set[str]:
    """The CPU feature flags the kernel reports (Linux; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
