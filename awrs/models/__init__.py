"""Language models behind one batched interface: transformers and tiny exact tables.

``load_model()`` is the entry point; torch and transformers are imported only when a real
model is loaded.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .base import DecodingSession, LanguageModel
from .table import TableModel

__all__ = ["DecodingSession", "LanguageModel", "TableModel", "load_model"]


def load_model(path: str | Path | None = None, *, device: str = "cpu", verbose: bool = True) -> LanguageModel:
    """Load a language model.

    Args:
        path: ``None`` for the embedded SmolLM2-135M-Instruct; a ``.gguf`` file (converted once
            and cached); or a local Hugging Face model directory.
        device: torch device, ``"cpu"`` by default.
        verbose: say on stderr when a one-time conversion runs.
    """
    from .embedded import EMBEDDED_NAME, embedded_gguf_path, ensure_converted

    try:
        from .hf import HFModel
    except ImportError as err:
        raise ModelError(
            f"real models need torch and transformers ({err}); install awrs[hf] or run `make demo`"
        ) from err

    if path is None:
        model = HFModel.from_directory(ensure_converted(embedded_gguf_path(), verbose=verbose), device=device)
        model.name = EMBEDDED_NAME
        return model
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelError(f"no model at {path}: give a local model directory or a .gguf file")
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelError(f"{path} is a file but not a .gguf model")
        model = HFModel.from_directory(ensure_converted(path, verbose=verbose), device=device)
        model.name = path.stem
        return model
    return HFModel.from_directory(path, device=device)
