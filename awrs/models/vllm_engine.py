"""vLLM's engine as the vllm backend uses it: importing vLLM (with the install hint), its
settings per device, and the one thread that runs its steps.

Not here: requests, sessions and the hand-off (:mod:`awrs.models.vllm`,
:mod:`awrs.models.vllm_capture`).
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future
from typing import Any

from ..errors import ConfigError, ModelError

INSTALL_HINT = "run `make setup-vllm` and use .venv-vllm/bin/awrs (or .venv-vllm/bin/python)"
GiB = 1 << 30
#: the weights' types the backend takes, and how ``model.weights`` names them: float32 (the
#: default) gives the transformers backend's log-probabilities; bfloat16 and float16 run faster
#: where the CPU or GPU has kernels for them
DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def check_dtype(dtype: str) -> str:
    """``dtype`` if the backend takes it, else a ConfigError naming the choices."""
    if dtype not in DTYPES:
        raise ConfigError(f"unknown vllm dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return dtype


def import_vllm(*, log: bool = False):
    """vLLM's entry points, or a ModelError that says how to install them. Its log shows
    errors only unless ``log`` (set before its first import: vLLM reads it then)."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # the logits processor must run in this process
    if not log:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
    except ImportError as err:
        raise ModelError(f"the vllm backend needs vLLM, which is not installed here ({err}); {INSTALL_HINT}") from err
    return vllm, LLM, SamplingParams, TokensPrompt, RequestOutputKind


def engine_settings(device: str, *, kv_cache_bytes: int | None, block_size: int | None, max_rows: int,
                    max_model_len: int, dtype: str) -> dict[str, Any]:
    """``vllm.LLM`` arguments for ``device``. On a CPU: an explicit KV cache size (else vLLM takes
    most of the host's memory and spends a minute preparing it) and 32-token blocks (the prefix
    cache matches whole blocks; the CPU default is 128). On a GPU vLLM's own defaults stand, but
    never asynchronous scheduling: a request added between steps must join the next one."""
    cpu = device == "cpu"
    settings: dict[str, Any] = dict(
        dtype=dtype, enforce_eager=True, enable_prefix_caching=True, async_scheduling=False,
        max_num_seqs=max_rows, max_model_len=max_model_len,
        # a step adds up to one request per row, each re-reading at most a block and a token
        # past the cached prefix, plus a whole prompt: a prefill split over steps would stall awrs
        max_num_batched_tokens=max_model_len + max_rows * ((block_size or 32) + 1),
    )
    if cpu:
        settings["block_size"] = block_size or 32
        settings["kv_cache_memory_bytes"] = kv_cache_bytes or GiB
    else:
        if block_size:
            settings["block_size"] = block_size
        if kv_cache_bytes:
            settings["kv_cache_memory_bytes"] = kv_cache_bytes
    return settings


def engine_threads(device: str, threads: int | None) -> tuple[Any, int]:
    """Set this thread's CPU threads (CPU only) before vLLM starts, and return torch's setter
    and the count, for the thread that will step the engine."""
    import torch

    setter = torch._C.set_num_threads  # torch's own: vLLM may have replaced torch.set_num_threads already
    if device == "cpu" and threads:
        setter(int(threads))
    return setter, torch.get_num_threads()


class Stepper:
    """One daemon thread that runs the engine's steps (a step may wait in the logits processor
    for a caller that has gone: a daemon thread never holds up the interpreter's exit)."""

    def __init__(self, set_threads, threads: int) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, args=(set_threads, threads), name="awrs-vllm-step",
                                        daemon=True)
        self._thread.start()

    def _run(self, set_threads, threads: int) -> None:
        set_threads(threads)
        while (job := self._jobs.get()) is not None:
            function, future = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except BaseException as err:  # handed to the caller, who reports it
                    future.set_exception(err)

    def submit(self, function) -> Future:
        future: Future = Future()
        self._jobs.put((function, future))
        return future

    def shutdown(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)
