"""What every ``awrs`` command line shares: argument types, the model options, and how errors
are reported. The main parser (``awrs.cli``) and the harness's (``awrs.evaluation.cli``) both
build on it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ..errors import AwrsError, ConfigError, ConstraintError
from ..models.embedded import QUANTS
from ..models.vllm_engine import DTYPES

QUANT_CHOICES = [*QUANTS, "shipped"]


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    return _int_at_least(text, 0, "a whole number >= 0")


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def add_model_options(parser: argparse.ArgumentParser, *, both: bool = False) -> None:
    parser.add_argument(
        "--model", default=None, metavar="NAME|PATH",
        help="a named model (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b, qwen2.5-coder-1.5b: see awrs "
             "models), a .gguf file or a local Hugging Face model directory (default: the embedded "
             "SmolLM2-135M-Instruct)",
    )
    backends = ["auto", "hf", "llamacpp", "vllm"] + (["both"] if both else [])
    parser.add_argument("--backend", choices=backends, default="auto",
                        help="model backend: transformers (hf), llama.cpp (GGUF files), vLLM (vllm: its "
                             "own environment, make setup-vllm) or auto (the default: llama.cpp when "
                             "llama-cpp-python is installed, else hf)"
                        + ("; both: llama.cpp and hf side by side, and vllm where it is installed" if both else ""))
    parser.add_argument("--device", default="cpu",
                        help="where the model runs: a torch device for hf (cuda, cuda:1, mps); for llamacpp "
                             "anything but cpu offloads every layer to llama.cpp's GPU (default: cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for the llamacpp and vllm backends (default: llamacpp, one per "
                             "core that other programs leave free, measured at load and at each session; "
                             "vllm, the cores this process may use)")
    parser.add_argument("--kv-cache-gb", type=positive_float, default=None, metavar="GB",
                        help="vllm: the KV cache's size in GiB (default: 1 on a CPU, vLLM's share of a GPU)")
    parser.add_argument("--dtype", choices=list(DTYPES), default=None,
                        help="vllm: the weights' type (default: float32, the transformers backend's "
                             "log-probabilities; bfloat16 is faster on CPUs with AMX and on GPUs)"
                        + ("; with --backend both it sets the vllm column's" if both else ""))
    parser.add_argument("--n-ctx", type=positive_int, default=None, metavar="CELLS",
                        help="llamacpp: KV cells shared by the prompt and every particle (default: 8192)")
    parser.add_argument("--quant", choices=QUANT_CHOICES, default=None,
                        help="llamacpp, embedded model: the weights run (default: f16, the shipped "
                             "Q4_1 weights converted once to F16 and cached; shipped or q4_1: the file "
                             "as it is, faster for one row, slower in batches; q8_0, q4_0: smaller copies)")


def side_by_side_backends() -> tuple[str, ...]:
    """What ``--backend both`` compares: llama.cpp and transformers, and vLLM where it is
    installed (its own environment, .venv-vllm, has no llama.cpp: there, transformers and vLLM)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return ("llamacpp", "hf")
    return (*(("llamacpp",) if importlib.util.find_spec("llama_cpp") else ()), "hf", "vllm")


def check_gpus_have_a_device(gpus: float, device: str, option: str) -> None:
    """Reserving GPUs on Ray without putting the model on one would leave them idle."""
    if gpus > 0 and device == "cpu":
        raise ConfigError(f"{option} {gpus:g} reserves GPUs, but the model would run on the CPU: "
                          "add --device cuda (or drop the option)")


def run_reporting_errors(command: Callable[[], int]) -> int:
    """Run a command; awrs errors become one line on stderr (exit 1 for a failing constraint
    check, 2 for bad input), never a traceback."""
    try:
        return command()
    except ConstraintError as err:
        print(f"awrs: error: {err}", file=sys.stderr)
        return 1
    except AwrsError as err:
        print(f"awrs: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("awrs: interrupted", file=sys.stderr)
        return 130


def model_options_from_args(args, backend: str | None = None, **overrides) -> dict:
    """``load_model`` options for the model options of a command line, on ``backend`` (default:
    ``--backend``); with ``--backend both``, ``--dtype`` goes to vllm alone."""
    from ..models.named import model_options

    dtype = getattr(args, "dtype", None)
    if args.backend == "both" and dtype:
        if "vllm" not in side_by_side_backends():
            raise ConfigError(f"--dtype {dtype} sets the vllm backend's weights, and --backend both runs vllm only "
                              "where it is installed (.venv-vllm/bin/awrs); drop --dtype here")
        dtype = dtype if backend == "vllm" else None
    settings = dict(threads=args.threads, n_ctx=getattr(args, "n_ctx", None), quant=getattr(args, "quant", None),
                    kv_cache_gb=getattr(args, "kv_cache_gb", None), dtype=dtype)
    return model_options(args.model, backend or args.backend, **{**settings, **overrides})


def load_model_from_args(args, backend: str | None = None):
    from ..models import load_model

    backend = backend or args.backend
    return load_model(args.model, backend=backend, device=getattr(args, "device", "cpu"),
                      **model_options_from_args(args, backend))


def add_commit_options(parser: argparse.ArgumentParser) -> None:
    """``--commit-share`` and ``--complete-power``: what a streamed server request uses to let
    particles share text early, so that the CLI can reproduce a stream's answer."""
    parser.add_argument("--commit-share", type=float, default=None, metavar="S",
                        help="commit the next character once particles holding this share of the "
                             "weight agree on it, in (0, 1] (SMC methods; a resampling by prefix, "
                             "drawn at random, so the target is the same; default: never; streamed "
                             "server requests use 0.3)")
    parser.add_argument("--commit-lag", type=int, default=None, metavar="L",
                        help="with --commit-share, also commit the next character whatever the "
                             "shares once every particle has drawn L tokens after it (default: "
                             "by share only; streamed server requests use --commit-share 1 "
                             "--commit-lag 3)")
    parser.add_argument("--complete-power", type=float, default=None, metavar="P",
                        help="weigh particles whose text is already complete among themselves by "
                             "their weights to this power (SMC methods; default: --resample-power; "
                             "streamed server requests use 1)")


def add_lookahead_option(parser: argparse.ArgumentParser, default: bool | None = True) -> None:
    """``--lookahead on|off``: whether resampling uses the constraint's look-ahead."""
    parser.add_argument("--lookahead", type=_on_off, default=default, metavar="on|off",
                        help="weigh particles, when resampling, by the constraint's look-ahead (SQL: "
                             "whether the text names a column its table lacks) and resample when it "
                             "doubts some (SMC methods; default on; a twist, so the target is the same)")


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return value == "on"


def commit_options(args) -> dict:
    return {"commit_share": args.commit_share, "commit_lag": args.commit_lag,
            "complete_power": args.complete_power}
