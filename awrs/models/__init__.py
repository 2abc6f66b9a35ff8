"""Language models behind one batched interface: transformers, llama.cpp and tiny exact tables.

``load_model()`` is the entry point; torch and transformers are imported only when a real
model is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, ModelError
from .base import DecodingSession, LanguageModel
from .table import TableModel

__all__ = ["DecodingSession", "LanguageModel", "TableModel", "load_model"]


BACKENDS = ("auto", "hf", "llamacpp", "vllm")
#: the embedded model's weights on llama.cpp: an F16 copy of the shipped Q4_1 file, which holds
#: the shipped weights to F16 rounding (mean KL 1.5e-5 from their exact values, the transformers
#: backend; llama.cpp's own Q4_1 arithmetic is 4.5e-3 away) and runs batches as fast as Q8_0
#: (docs/models.md, "Which weights llama.cpp runs").
DEFAULT_QUANT = "f16"


def load_model(
    path: str | Path | None = None, *, device: str = "cpu", verbose: bool = True, backend: str = "auto",
    **backend_options: Any,
) -> LanguageModel:
    """Load a language model.

    Args:
        path: ``None`` for the embedded SmolLM2-135M-Instruct; a named model (``"gemma3-270m"``,
            ``"smollm2-135m"``: see :data:`awrs.models.named.NAMED_MODELS`, installed and
            cached on first use); a ``.gguf`` file; or (``hf`` only) a local Hugging Face model
            directory.
        device: torch device, ``"cpu"`` by default (``llamacpp``: ``"cpu"`` keeps every layer on
            the CPU; anything else offloads all layers if llama.cpp was built for a GPU).
        verbose: say on stderr when a one-time conversion runs.
        backend: ``"hf"`` (transformers; a GGUF file is dequantized to float32 once and cached),
            ``"vllm"`` (vLLM's engine, in its own environment: ``make setup-vllm``; it reads
            the same folders and conversions as ``hf``),
            ``"llamacpp"`` (llama-cpp-python; reads a GGUF file as it is, the embedded model in
            the format ``quant`` names), or ``"auto"`` (the
            default): llama.cpp for a GGUF model (the embedded one included) when
            llama-cpp-python is installed and loads -- it is 2.5-3x faster on CPUs -- otherwise
            transformers. ``model.backend`` says which one was chosen.
        backend_options: ``llamacpp`` only: ``n_ctx`` (KV cells shared by all rows, default
            8192), ``n_seq_max`` (rows at once, default 64), ``n_threads`` (default: one per
            core that other programs leave free), ``n_gpu_layers``, ``flash_attn``,
            ``prompt_chunk`` (prompt tokens per batch, default 64), ``log`` (print llama.cpp's
            log), ``name``;
            see :class:`awrs.models.llamacpp.LlamaCppModel`. ``quant`` (embedded model only):
            ``"f16"`` (the default, :data:`DEFAULT_QUANT`: the shipped weights to F16 rounding),
            ``"q8_0"`` or ``"q4_0"``: a copy requantized once and cached (formats with batched
            CPU kernels; see :func:`awrs.models.embedded.requantized_gguf`); ``"shipped"`` or
            ``"q4_1"`` reads the shipped file as it is. ``model.weights`` says which runs.
            ``vllm`` only: ``threads``, ``kv_cache_bytes``, ``block_size``, ``max_rows``,
            ``max_model_len``, ``dtype`` (``"float32"``, the default, ``"bfloat16"`` or
            ``"float16"``), ``log``; see :class:`awrs.models.vllm.VLLMModel`.
    """
    from .embedded import EMBEDDED_NAME, embedded_gguf_path
    from .named import named_model

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    named = named_model(path)
    if named is not None:
        gguf = named.gguf(verbose=verbose)
        path = None if named.embedded else gguf  # the embedded model keeps its quantizations
        if path is not None and backend in ("llamacpp", "auto"):
            backend_options.setdefault("name", named.name)
    if backend == "auto":
        backend = _auto_backend(path)
        if backend == "hf":
            for option in ("n_threads", "n_ctx", "quant", "name"):  # settings only llama.cpp would use
                backend_options.pop(option, None)
    if "dtype" in backend_options and backend != "vllm":
        raise ConfigError(f"dtype= is an option of backend='vllm', not {backend!r}: llama.cpp runs the weights "
                          "its file or quant= names, transformers runs float32")
    if backend == "llamacpp":
        return _load_llamacpp(path, device=device, verbose=verbose, **backend_options)
    if backend == "vllm":
        return _load_vllm(path, named.name if named is not None else None, device=device, verbose=verbose,
                          **backend_options)
    if backend_options:
        raise ConfigError(
            f"options {sorted(backend_options)} are for backend='llamacpp', not {backend!r}"
        )

    try:
        from .hf import HFModel
    except ImportError as err:
        raise ModelError(
            f"real models need torch and transformers ({err}); install awrs[hf] or run `make demo`"
        ) from err

    if path is None:
        model = _hf_from_gguf(HFModel, embedded_gguf_path(), device=device, verbose=verbose)
        model.name = EMBEDDED_NAME
        model.weights = "F32"  # the shipped Q4_1 values, dequantized
        return model
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"no model at {path}: give a local model directory or a .gguf file")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf model")
        model = _hf_from_gguf(HFModel, path, device=device, verbose=verbose)
        model.name = named.name if named is not None else path.stem
        return model
    return HFModel.from_directory(path, device=device)


def _load_vllm(path, named_as: str | None, *, device: str, verbose: bool, **options) -> LanguageModel:
    """The vLLM backend on a local model folder; a GGUF file (the embedded model included) is
    read through its float32 conversion, as the transformers backend reads it."""
    from .embedded import EMBEDDED_NAME, embedded_gguf_path, ensure_converted
    from .gguf_tokens import declared_tokens
    from .vllm import VLLMModel
    from .vllm_engine import DTYPES, check_dtype, import_vllm

    allowed = {"threads", "kv_cache_bytes", "block_size", "max_rows", "max_model_len", "dtype", "log", "name"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown vllm options {unknown}; allowed: {sorted(allowed)}")
    dtype = check_dtype(options.setdefault("dtype", "float32"))
    import_vllm(log=bool(options.get("log")))  # before any conversion: say how to install vLLM first
    declared, embedded = None, path is None
    if path is None or Path(path).expanduser().suffix == ".gguf":
        gguf = embedded_gguf_path() if path is None else Path(path).expanduser()
        if not gguf.is_file():
            raise ModelError(f"no model at {gguf}: give a local model directory or a .gguf file")
        declared = declared_tokens(gguf)
        options.setdefault("name", EMBEDDED_NAME if path is None else named_as or gguf.stem)
        path = ensure_converted(gguf, verbose=verbose)
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ModelError(f"no model folder at {directory}: the vllm backend reads a local Hugging Face model "
                         "folder, a .gguf file or a named model")
    model = VLLMModel(directory, device=device, declared=declared, **options)
    if embedded:  # the shipped Q4_1 values, dequantized (as on the transformers backend), in this type
        model.weights = DTYPES[dtype]
    return model


def _hf_from_gguf(hf_model, gguf: Path, *, device: str, verbose: bool):
    """A GGUF file on transformers: its float32 conversion, with the token types the file
    declares, as llama.cpp reads it (the converted tokenizer need not agree: Qwen's unused
    padding rows are text there, "[PAD151665]")."""
    from .embedded import ensure_converted
    from .gguf_tokens import declared_tokens

    directory = ensure_converted(gguf, verbose=verbose)
    return hf_model.from_directory(directory, device=device, declared=declared_tokens(gguf))


def _auto_backend(path) -> str:
    """llama.cpp for GGUF models when it is installed and loads, else transformers."""
    is_gguf = path is None or Path(path).expanduser().suffix == ".gguf"
    if not is_gguf:
        return "hf"
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return "hf"
    try:
        verdict = _checked_build(path)
    except ModelError:  # installed but its library does not load, or no GGUF to test with
        return "hf"
    if not verdict.ok:  # a build that crashes or fails must not take the process down
        import sys

        print(f"awrs: using transformers: {verdict.message()}", file=sys.stderr, flush=True)
        return "hf"
    return "llamacpp"


def _checked_build(path):
    """The installed llama.cpp build's verdict (probed in a subprocess, cached per library).

    The probe decodes with the embedded model when it is installed (a file known to be good,
    so the verdict is about the build), else with the model being loaded.
    """
    from .embedded import embedded_gguf_path
    from .llamacpp_lib import llama as _llama
    from .llamacpp_probe import Verdict, check_build

    try:
        gguf = embedded_gguf_path()
    except ModelError:
        gguf = None if path is None else Path(path).expanduser()
    verdict = check_build(gguf) if gguf is not None and gguf.is_file() else Verdict(True, "")
    if verdict.ok:
        _llama()  # loads the library in this process; raises ModelError if it cannot
    return verdict


def _load_llamacpp(path, *, device: str, verbose: bool = True, **options) -> LanguageModel:
    from .embedded import EMBEDDED_NAME, QUANTS, SHIPPED_QUANT, embedded_gguf_path, requantized_gguf
    from .llamacpp import LlamaCppModel

    allowed = {"n_ctx", "n_seq_max", "n_threads", "n_gpu_layers", "flash_attn", "prompt_chunk", "name", "log",
               "quant"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(f"unknown llamacpp options {unknown}; allowed: {sorted(allowed)}")
    options.setdefault("n_gpu_layers", 0 if device == "cpu" else -1)
    if path is not None and options.get("quant"):
        raise ConfigError("quant= applies to the embedded model only; a GGUF file runs as it is")
    quant = str(options.pop("quant", None) or DEFAULT_QUANT).lower()
    quant = SHIPPED_QUANT if quant == "shipped" else quant
    if quant not in QUANTS:
        raise ModelError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)} or shipped")
    if path is None:
        gguf = embedded_gguf_path()
        options.setdefault("name", EMBEDDED_NAME)
    else:
        gguf = Path(path).expanduser()
        if not gguf.exists():
            raise ModelError(f"no model at {gguf}: the llamacpp backend reads a .gguf file")
        if not gguf.is_file() or gguf.suffix != ".gguf":
            raise ModelError(f"{gguf} is not a .gguf file; the llamacpp backend reads GGUF models only")
    verdict = _checked_build(path)
    if not verdict.ok:
        raise ModelError(verdict.message())
    if path is None and quant != SHIPPED_QUANT:  # after the build check: requantizing runs its code
        gguf = requantized_gguf(quant, gguf, verbose=verbose)
    model = LlamaCppModel(gguf, **options)
    model.weights = quant.upper() if path is None else ""
    return model
