"""The llama.cpp build: portable (no AMX, no native flags), probed before use, reported by doctor.

A llama.cpp compiled with ``-march=native`` on a CPU that reports AMX holds AMX tile
instructions, which fault on virtual machines that do not enable AMX: the whole process dies.
These tests check the installed library itself, and check that a crashing build makes ``auto``
fall back to transformers (and an explicit ``llamacpp`` raise) instead of taking pytest down.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from awrs.errors import ModelError
from awrs.models import llamacpp_build, llamacpp_probe
from awrs.models.llamacpp_build import cpu_library, instruction_families, recorded_flags

needs_objdump = pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) is not installed")


@needs_objdump
def test_installed_llamacpp_has_no_amx_and_was_not_built_native():
    """Fails on any machine, AMX or not, if the installed build could crash elsewhere.

    Two independent checks: (1) the disassembly of ``libggml-cpu.so`` (objdump) must hold no
    AMX tile instruction (ldtilecfg, tileloadd, tdpb*, ...) and no AVX-512 (zmm) instruction
    unless the build was asked for AVX-512 on purpose; (2) the CMake flags recorded by
    ``make setup-llamacpp`` must say ``GGML_NATIVE=OFF`` (a library without that record was not
    built by awrs's script, e.g. by a plain ``pip install``, which compiles natively).
    """
    library = cpu_library()
    if library is None:
        pytest.skip("llama-cpp-python is not installed (make setup-llamacpp installs it)")
    found = instruction_families(library)
    assert found["amx"] == 0, f"{library} holds {found['amx']} AMX tile instructions: rebuild with make setup-llamacpp"
    flags = recorded_flags()
    assert flags, f"{library} was not built by make setup-llamacpp (no build record): it may be native"
    assert "-DGGML_NATIVE=OFF" in flags["CMAKE_ARGS"]
    assert flags.get("CPU_FEATURES"), "the build record names no CPU features: rerun make setup-llamacpp"
    if flags.get("LLAMA_CPU") != "avx512":
        assert found["avx512"] == 0, f"{library} holds AVX-512 instructions but was built for {flags.get('LLAMA_CPU')}"


@needs_objdump
@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_the_instruction_scan_finds_amx_and_avx512(tmp_path: Path):
    """The scan above can fail: a library holding one AMX and one AVX-512 instruction is caught."""
    source = tmp_path / "k.c"
    source.write_text(
        "void tile(void *cfg) { __asm__ volatile (\"ldtilecfg (%0)\" :: \"r\"(cfg)); }\n"
        "void wide(void) { __asm__ volatile (\"vpxord %%zmm0, %%zmm0, %%zmm0\" ::: \"xmm0\"); }\n"
    )
    library = tmp_path / "libk.so"
    built = subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], capture_output=True, check=False)
    if built.returncode != 0:
        pytest.skip(f"this assembler cannot assemble AMX: {built.stderr.decode()[:200]}")
    found = instruction_families(library)
    assert found["amx"] >= 1 and found["avx512"] >= 1


@pytest.mark.parametrize("mode, words", [("crash", "SIGSEGV"), ("fail", "simulated failure")])
def test_a_crashing_build_is_a_verdict_not_a_dead_process(monkeypatch, mode, words):
    monkeypatch.setenv(llamacpp_probe.SIMULATE_VARIABLE, mode)
    verdict = llamacpp_probe.check_build(Path("unused.gguf"))
    assert not verdict.ok
    assert words in verdict.reason
    assert "make setup-llamacpp" in verdict.message()


def _installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.skipif(not _installed(), reason="llama-cpp-python is not installed (make setup-llamacpp)")
def test_auto_falls_back_to_transformers_and_explicit_llamacpp_raises(monkeypatch, capsys):
    from awrs.models import _auto_backend, load_model

    monkeypatch.setenv(llamacpp_probe.SIMULATE_VARIABLE, "crash")
    assert _auto_backend(None) == "hf"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "using transformers" in err[0] and "SIGSEGV" in err[0]
    with pytest.raises(ModelError, match="SIGSEGV.*make setup-llamacpp"):
        load_model(backend="llamacpp")


def test_verdicts_are_cached_per_library_file(monkeypatch, tmp_path: Path):
    library = tmp_path / "libggml-cpu.so"
    library.write_bytes(b"first build")
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(llamacpp_probe.SIMULATE_VARIABLE, raising=False)
    monkeypatch.setattr(llamacpp_build, "library_files", lambda: [library])
    calls = []

    def probe(gguf, **_):
        calls.append(gguf)
        return llamacpp_probe.Verdict(False, "the test process died with SIGILL")

    monkeypatch.setattr(llamacpp_probe, "run_probe", probe)
    for _ in range(3):
        assert llamacpp_probe.check_build(Path("m.gguf")).reason == "the test process died with SIGILL"
    assert len(calls) == 1  # probed once, then read from the cache
    library.write_bytes(b"a rebuilt library, another size")
    llamacpp_probe.check_build(Path("m.gguf"))
    assert len(calls) == 2  # a new build is probed again


def test_doctor_reports_without_loading_models(capsys):
    from awrs.cli import main

    assert main(["doctor", "--no-backends"]) == 0
    out = capsys.readouterr().out
    for words in ("awrs 0.", "Python", "extra [hf]", "CPU reports", "model cache"):
        assert words in out
    assert sys.version.split()[0] in out


def test_doctor_says_whether_this_cpu_runs_the_build(monkeypatch, capsys):
    from awrs.cli import main
    from awrs.models import llamacpp_build

    if not recorded_flags().get("CPU_FEATURES"):
        pytest.skip("no llama.cpp build recorded by make setup-llamacpp")
    assert main(["doctor", "--no-backends"]) == 0
    assert "(all reported by this CPU)" in capsys.readouterr().out
    monkeypatch.setattr(llamacpp_build, "host_cpu_flags", lambda: {"sse2"})
    assert main(["doctor", "--no-backends"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("llama.cpp needs CPU features"))
    assert "cannot run on this CPU" in line and "lacks avx avx2" in line


AVX512_BUILD = {"LLAMA_CPU": "avx512", "CPU_FEATURES": "avx avx2 fma avx512f avx512bw avx512_vnni"}


def test_a_build_for_missing_cpu_features_is_refused_before_it_runs(monkeypatch, tmp_path: Path):
    """An AVX-512 build on a CPU without AVX-512 VNNI is refused from its record: never probed
    (which would die with SIGILL), ``auto`` falls back to transformers, and the message names
    what is missing and how to rebuild."""
    from awrs.models import _auto_backend, llamacpp_build

    cpu = {"avx", "avx2", "fma", "avx512f", "avx512bw"}
    assert llamacpp_probe.missing_cpu_features(AVX512_BUILD, cpu | {"avx512_vnni"}) is None
    assert llamacpp_probe.missing_cpu_features(AVX512_BUILD, set()) is None  # flags unknown: probe decides
    verdict = llamacpp_probe.missing_cpu_features(AVX512_BUILD, cpu)
    assert not verdict.ok and "avx512_vnni" in verdict.reason and "avx512bw" not in verdict.reason

    library = tmp_path / "libggml-cpu.so"
    library.write_bytes(b"an avx512 build")
    monkeypatch.setenv("AWRS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(llamacpp_probe.SIMULATE_VARIABLE, raising=False)
    monkeypatch.setattr(llamacpp_build, "library_files", lambda: [library])
    monkeypatch.setattr(llamacpp_build, "recorded_flags", lambda: AVX512_BUILD)
    monkeypatch.setattr(llamacpp_build, "host_cpu_flags", lambda: cpu)
    monkeypatch.setattr(llamacpp_probe, "run_probe", lambda *a, **k: pytest.fail("a build this CPU cannot run was probed"))
    message = llamacpp_probe.check_build(Path("m.gguf")).message()
    assert "cannot run on this CPU" in message and "avx512_vnni" in message and "make setup-llamacpp" in message
    if _installed():
        from awrs.models.embedded import embedded_gguf_path

        try:
            embedded_gguf_path()
        except ModelError:
            return
        import io
        from contextlib import redirect_stderr

        err = io.StringIO()
        with redirect_stderr(err):
            assert _auto_backend(None) == "hf"
        assert "using transformers" in err.getvalue() and "avx512_vnni" in err.getvalue()


@pytest.mark.parametrize("flags, wanted, resolved", [
    ("avx avx2 fma f16c bmi2 avx512f avx512cd avx512bw avx512dq avx512vl avx512vbmi avx512_vnni", "auto", "avx512"),
    ("avx avx2 fma f16c bmi2 avx512f avx512cd avx512bw avx512dq avx512vl", "auto", "avx2"),  # no VBMI, VNNI
    ("avx avx2 fma f16c bmi2", "auto", "avx2"),
    ("avx avx2 fma f16c bmi2", "avx512", "avx512"),  # asked for explicitly
])
def test_the_build_script_picks_avx512_only_where_every_feature_is_reported(tmp_path: Path, flags, wanted, resolved):
    script = Path(__file__).resolve().parents[1] / "bench" / "llamacpp_build.sh"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags} lm\n")
    done = subprocess.run(["bash", str(script), "--print-cpu"], capture_output=True, text=True, check=True,
                          env={"PATH": "/usr/bin:/bin", "AWRS_CPUINFO": str(cpuinfo), "LLAMA_CPU": wanted})
    assert done.stdout.strip() == resolved
