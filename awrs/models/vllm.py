"""vLLM backend: awrs's batched decoding on vLLM's engine, with one live vLLM request per particle.

A session's rows map to vLLM requests; rows with equal token histories (all rows after the
prompt, resampled copies that drew the same token) share one request, so a step evaluates each
distinct history once. ``logprobs()`` runs one engine step in a worker thread up to its logits
processor, which hands over every request's log-softmax (:mod:`awrs.models.vllm_capture`);
``step(parents, tokens)`` gives each surviving request its chosen token (the processor forces
it), aborts the requests no row continues, and adds a new request for each further child: the
parent's tokens plus its own, whose prefix vLLM's prefix cache serves.

vLLM is imported only when this backend is loaded. It runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so that its logits processor reaches the caller.
Not here: vLLM's settings and stepping thread (:mod:`awrs.models.vllm_engine`) and the
hand-off itself (:mod:`awrs.models.vllm_capture`).
"""

from __future__ import annotations

import itertools
import warnings
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import DecodingSession, LanguageModel, merge_equal_histories, step_arguments
from .gguf_tokens import DeclaredTokens
from .hf_tokenizer import TokenizerPrompts, load_tokenizer, tokenizer_vocabulary
from .vllm_engine import GiB, Stepper, engine_settings, engine_threads, import_vllm

@dataclass
class _Request:
    key: int  # the processor's key (SamplingParams.extra_args)
    request_id: str
    tokens: list[int]  # prompt and every token since


class VLLMModel(TokenizerPrompts, LanguageModel):
    """A causal LM served by a vLLM engine in this process.

    Args:
        directory: a local Hugging Face model folder (config.json, weights, tokenizer).
        device: ``"cpu"`` (vLLM's CPU build) or ``"cuda"``.
        threads: CPU threads (CPU only; default: torch's setting).
        kv_cache_bytes: KV cache size (CPU default 1 GiB; GPU default: vLLM's share of memory).
        block_size: KV block size in tokens (CPU default 32; GPU: vLLM's).
        max_rows: vLLM requests alive at once (the particles of all live requests).
        max_model_len: longest token history (default: the model's, at most 4096).
        dtype: weights' dtype (float32 keeps log-probabilities equal to the transformers backend's).
        declared: what a GGUF source declares about its tokens (as for the transformers backend).
    """

    backend = "vllm"
    #: the models whose engines run in this process: vLLM keeps its parallel state per process,
    #: and shutting one engine down tears it down for every engine, so one runs at a time
    _running: weakref.WeakSet = weakref.WeakSet()

    def __init__(self, directory: str | Path, *, device: str = "cpu", threads: int | None = None,
                 kv_cache_bytes: int | None = None, block_size: int | None = None, max_rows: int = 256,
                 max_model_len: int | None = None, dtype: str = "float32", name: str | None = None,
                 declared: DeclaredTokens | None = None, log: bool = False) -> None:
        directory = Path(directory).expanduser()
        if not (directory / "config.json").is_file():
            raise ModelError(f"{directory} is not a Hugging Face model directory (no config.json); the vllm "
                             "backend reads a local model folder, a named model or a .gguf file")
        _, LLM, self._SamplingParams, self._TokensPrompt, self._output_kind = import_vllm(log=log)
        for other in list(VLLMModel._running):
            if other._dead is None:
                raise ModelError(f"a vLLM engine already runs in this process ({other.name}); vLLM runs one per "
                                 "process: close it first (model.close()), or load this model in another process")
        self.tokenizer, generation_eos, config_len = load_tokenizer(directory)
        self.name = name or directory.name
        self.vocab = tokenizer_vocabulary(self.tokenizer, generation_eos, declared)
        self.max_context = int(max_model_len or min(config_len or 4096, 4096))
        self.max_rows = int(max_rows)
        from .vllm_capture import Handoff, capture_processor

        self._handoff = Handoff()
        settings = engine_settings(device, kv_cache_bytes=kv_cache_bytes, block_size=block_size,
                                   max_rows=self.max_rows, max_model_len=self.max_context, dtype=dtype)
        step_threads = engine_threads(device, threads)
        try:
            with warnings.catch_warnings():  # vLLM's deprecation warnings are about torch APIs it calls
                warnings.simplefilter("ignore", FutureWarning)
                self._llm = LLM(model=str(directory), tokenizer=str(directory), seed=0, use_tqdm_on_load=log,
                                logits_processors=[capture_processor(self._handoff)], **settings)
        except Exception as err:  # vLLM raises many kinds; say which model and settings failed
            raise ModelError(f"vLLM could not load {directory} ({type(err).__name__}: {err})") from err
        self.settings = settings
        self._engine = self._llm.llm_engine
        cache = self._engine.vllm_config.cache_config
        if getattr(cache, "num_gpu_blocks", None):  # a server admits requests within the KV cache
            self.max_cells = int(cache.num_gpu_blocks) * int(cache.block_size)
        # OpenMP's thread count is per thread, and vLLM's CPU attention checks that a step runs
        # with the count it was set up with: the stepping thread gets this thread's
        self._worker = Stepper(*step_threads)
        self._step: Future | None = None
        self._keys = itertools.count()
        self._active: VLLMSession | None = None  # the session whose requests are in the engine
        self._dead: str | None = None
        self._handoff.unfinished = self._unfinished_keys
        VLLMModel._running.add(self)

    # -- the engine -------------------------------------------------------------------------

    def _unfinished_keys(self) -> set[int]:
        """Keys of requests whose prompts this step does not finish (a chunked prefill)."""
        from .vllm_capture import KEY

        try:
            requests = self._engine.engine_core.engine_core.scheduler.requests.values()
        except AttributeError:  # another vLLM layout: the check after the step still catches it
            return set()
        return {r.sampling_params.extra_args[KEY] for r in requests
                if getattr(r, "is_prefill_chunk", False) and r.sampling_params is not None
                and KEY in (r.sampling_params.extra_args or {})}

    def check_alive(self) -> None:
        if self._dead is not None:
            raise ModelError(f"the vLLM engine of {self.name} cannot be used: {self._dead}; load the model again")

    def _fail(self, why: str) -> ModelError:
        self._dead = why
        return ModelError(f"the vLLM engine of {self.name} failed: {why}; load the model again")

    def _add(self, tokens: list[int]) -> _Request:
        from .vllm_capture import KEY

        key = next(self._keys)
        params = self._SamplingParams(
            max_tokens=max(self.max_context - len(tokens), 1), ignore_eos=True, temperature=1.0,
            detokenize=False, output_kind=self._output_kind.DELTA, extra_args={KEY: key},
        )
        request_id = f"awrs-{key}"  # outputs and aborts name it so (vLLM adds a suffix inside)
        try:
            self._engine.add_request(request_id, self._TokensPrompt(prompt_token_ids=tokens), params)
        except Exception as err:
            raise self._fail(f"adding a request raised {type(err).__name__}: {err}") from err
        return _Request(key, request_id, tokens)

    def _abort(self, requests: Sequence[_Request]) -> None:
        if requests and self._dead is None:
            try:
                self._engine.abort_request([r.request_id for r in requests])
            except Exception as err:
                raise self._fail(f"aborting requests raised {type(err).__name__}: {err}") from err

    def _start_step(self, keys: Sequence[int]) -> dict:
        """Run an engine step up to its logits processor; the rows' log-probabilities by key."""
        from .vllm_capture import HandoffCancelled

        self._handoff.begin(keys)
        self._step = self._worker.submit(self._engine.step)
        try:
            return self._handoff.wait_published(self._step.done)
        except HandoffCancelled as err:
            self._finish_step({})  # raises the engine's own error if the step failed
            hint = f"; {self.limit_hint()}" if "KV cache" in str(err) else ""
            raise ModelError(f"{err}{hint}") from None

    def _finish_step(self, choices: dict[int, int]) -> list:
        """Hand the chosen tokens to the processor and wait for the step's end."""
        step, self._step = self._step, None
        if step is None:
            return []
        self._handoff.choose(choices)
        try:
            return step.result()
        except Exception as err:
            raise self._fail(f"an engine step raised {type(err).__name__}: {err}") from err

    def limit_hint(self) -> str:
        return ("give vLLM a larger KV cache (kv_cache_bytes=, or --kv-cache-gb on the command line; now "
                f"{self.settings.get('kv_cache_memory_bytes', 0) / GiB:.2f} GiB), or run fewer particles")

    # -- sessions ---------------------------------------------------------------------------

    def _checked_prompt(self, prompt_ids: Sequence[int]) -> list[int]:
        ids = [int(i) for i in prompt_ids]
        if not ids:
            start = self.tokenizer.bos_token_id
            ids = [int(start if start is not None else self.tokenizer.eos_token_id)]
        if len(ids) >= self.max_context:
            raise ModelError(f"the prompt has {len(ids)} tokens; the vllm backend runs {self.name} with at most "
                             f"{self.max_context} (max_model_len=)")
        return ids

    def open(self, prompt_ids: Sequence[int], rows: int) -> DecodingSession:
        return self.open_many([prompt_ids], [rows])

    def open_many(self, prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> DecodingSession:
        self.check_alive()
        session = VLLMSession(self)
        for prompt, n in zip(prompts, rows):
            session.extend(prompt, n)
        return session

    def _activate(self, session: VLLMSession) -> None:
        """Make ``session``'s requests the engine's: every engine step runs all live requests,
        so another session's are suspended (aborted, and added again when it next runs)."""
        if self._active is not None and self._active is not session:
            self._active._suspend()
        self._active = session

    def close(self) -> None:
        """Stop the engine and free its memory (another vllm model can be loaded then)."""
        if self._engine is None:
            return
        if self._active is not None:
            self._active.close()
        self._worker.shutdown()
        self._dead = "the model was closed"
        try:
            self._engine.engine_core.shutdown()
        except Exception:  # an engine that failed may not shut down cleanly; it is dropped all the same
            pass
        self._llm = self._engine = None
        VLLMModel._running.discard(self)


class VLLMSession(DecodingSession):
    """Rows of one or more prompts; ``rowmap[row]`` is the index of the row's request.

    Several sessions may be open on one model; the one that runs has its requests in the engine,
    the others are suspended: their requests aborted, their token histories kept. A suspended
    session that runs again adds its requests anew (the prefix cache serves most of them), and
    one suspended after its log-probabilities were read continues from those: each row of its
    next step becomes a new request.
    """

    extendable = True

    def __init__(self, model: VLLMModel) -> None:
        self._model = model
        self._requests: list[_Request] = []
        self._rowmap = np.zeros(0, dtype=np.int64)
        self._logprobs: np.ndarray | None = None
        self._closed: str | None = None
        self._suspended = False
        self.evaluated = 0  # requests evaluated by step() so far (rows sharing a history count once)

    @property
    def rows(self) -> int:
        return len(self._rowmap)

    def _check(self) -> None:
        if self._closed is not None:
            raise ModelError(f"this vllm decoding session cannot continue: {self._closed}")
        self._model.check_alive()

    def extend(self, prompt_ids: Sequence[int], rows: int) -> None:
        self._check()
        if self._logprobs is not None and self.rows:
            raise ModelError("rows can join a vllm session only between steps (after step(), before logprobs())")
        ids = self._model._checked_prompt(prompt_ids)
        self._resume()
        self._requests.append(self._model._add(ids))
        self._rowmap = np.concatenate([self._rowmap, np.full(int(rows), len(self._requests) - 1, dtype=np.int64)])
        self._logprobs = None

    def logprobs(self) -> np.ndarray:
        if self._logprobs is None:
            self._check()
            width = len(self._model.vocab)
            if not self._requests:
                return np.zeros((0, width), dtype=np.float32)
            try:
                self._resume()
                captured = self._model._start_step([r.key for r in self._requests])
            except ModelError as err:
                self._fail(str(err))
                raise
            rows = np.stack([captured[r.key].numpy() for r in self._requests])
            if rows.shape[1] != width:  # some models pad the output layer past the tokenizer
                from .hf_tokenizer import fit_width

                rows = fit_width(rows, width)
            self._logprobs = rows[self._rowmap]
        return self._logprobs

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        self._check()
        model = self._model
        parents, tokens = step_arguments(parents, tokens, self.rows, len(model.vocab))
        longest = max((len(self._requests[self._rowmap[p]].tokens) for p in parents.tolist()), default=0)
        if longest + 1 > model.max_context:
            raise ModelError(f"a row would reach {longest + 1} tokens but the vllm backend runs {model.name} "
                             f"with max_model_len={model.max_context}")
        self.logprobs()  # the step whose logits awrs chose from is in flight, unless suspended since
        model._activate(self)
        first, group = merge_equal_histories(self._rowmap, parents, tokens)
        sources = self._rowmap[parents[first]]
        # a request's first child keeps it (its token is forced); further children are new requests
        kept: dict[int, int] = {}
        if not self._suspended:
            for g, source in enumerate(sources.tolist()):
                kept.setdefault(source, g)
            choices = {self._requests[s].key: int(tokens[first[g]]) for s, g in kept.items()}
            self._check_forced(model._finish_step(choices), kept, choices)
        self._logprobs = None
        dropped = [r for i, r in enumerate(self._requests) if i not in kept and not self._suspended]
        histories = [[*self._requests[s].tokens, int(tokens[first[g]])] for g, s in enumerate(sources.tolist())]
        requests: list[_Request] = []
        try:
            model._abort(dropped)
            for g, source in enumerate(sources.tolist()):
                if kept.get(source) == g:
                    request = self._requests[source]
                    request.tokens = histories[g]
                else:  # a further child: a new request, its prefix served from the prefix cache
                    request = model._add(histories[g])
                requests.append(request)
        except ModelError as err:
            self._fail(str(err))
            raise
        self._requests = requests
        self._suspended = False
        self._rowmap = group
        self.evaluated += len(first)

    def _check_forced(self, outputs: list, kept: dict[int, int], choices: dict[int, int]) -> None:
        """Every kept request took exactly its forced token in the step that just ended."""
        by_id = {getattr(o, "request_id", None): o for o in outputs}
        for source in kept:
            request = self._requests[source]
            out = by_id.get(request.request_id)
            produced = list(out.outputs[0].token_ids) if out is not None and out.outputs else []
            if produced != [choices[request.key]]:
                self._fail(f"vLLM gave {produced} to a request that was forced to take "
                           f"{choices[request.key]}")
                raise ModelError(self._closed)

    def _fail(self, why: str) -> None:
        if self._closed is None:
            self._closed = why
            self._release()

    def _suspend(self) -> None:
        """Take this session's requests out of the engine, keeping their histories."""
        model = self._model
        if model._step is not None:  # a step waits for this session's tokens: let it end unforced
            model._handoff.cancel()
            model._finish_step({})
        if not self._suspended:
            model._abort(self._requests)
        self._suspended = True
        if model._active is self:
            model._active = None

    def _resume(self) -> None:
        """Put this session's requests (back) into the engine."""
        model = self._model
        model._activate(self)
        if self._suspended:
            self._requests = [model._add(r.tokens) for r in self._requests]
            self._suspended = False

    def _release(self) -> None:
        try:
            if self._model._active is self:
                self._suspend()
        except ModelError:
            pass  # the engine is marked dead; nothing more to free
        self._requests = []

    def close(self) -> None:
        if self._closed is None:
            self._closed = "it was closed"
            self._release()
        self._rowmap = np.zeros(0, dtype=np.int64)
        self._logprobs = None
