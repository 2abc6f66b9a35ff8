"""llama.cpp backend (through ``llama-cpp-python``): batched, KV-cached decoding of a GGUF file.

The GGUF file is read as shipped (4-bit weights stay 4-bit; nothing is converted or cached on
disk). One llama.cpp context per model holds a *unified* KV cache of ``n_ctx`` cells shared by
every sequence, so:

* a session's rows are llama.cpp sequence ids. The prompt is evaluated once, in a sequence
  reserved for it (id ``n_seq_max``), and shared with every row by tagging its KV cells with
  the rows' ids (``llama_memory_seq_cp``: metadata only, no copy of K/V data, no recomputation);
* ``step(parents, tokens)`` reorders rows by re-mapping sequence ids: the first child of a row
  keeps the row's id, further children get free ids that the parent's cells are copied to, and
  rows without children are removed (``llama_memory_seq_rm``) so their cells are freed. No id is
  written before every copy from it is done, so any permutation is safe. Then ONE
  ``llama_decode`` evaluates one token per row, with logits for every row;
* the prompt stays in its reserved sequence after a session ends: the next session with the
  same prompt reuses it (logits included), and a different prompt re-evaluates only what
  follows the longest common prefix (a shared chat-template header, for example).

Sessions of one model may overlap: they draw sequence ids from one pool of ``n_seq_max``.

Limits (all constructor arguments, and ``load_model(..., backend="llamacpp", name=value)``):

* ``n_ctx`` (default 8192, rounded up to a multiple of 256 by llama.cpp): KV cells shared by all
  rows, the prompt counted once. A row can be at most ``n_ctx`` tokens long, and all rows
  together need one cell per distinct token (prompt + rows x generated tokens at most, less
  where rows share ancestors). 10 particles x 64 tokens after a 50-token prompt use at most
  690 cells.
* ``n_seq_max`` (default 64, at most 255): rows alive at once, over all open sessions.
* ``n_threads`` (default: the CPU cores this process may use).

Exceeding a limit raises :class:`~awrs.errors.ModelError` naming it and how to raise it.

The vocabulary comes from llama.cpp's own tokenizer data (``llama_token_to_piece`` with special
tokens rendered; control tokens are special), EOS ids are the declared EOS and end-of-turn tokens
plus special tokens that are known end markers (the transformers backend's rule), and the chat
template is the GGUF's, rendered with jinja2 as transformers renders it.

Not here: sampling (see :mod:`awrs.sampling`), the transformers backend (:mod:`awrs.models.hf`).
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..vocab import KNOWN_END_TOKENS, Vocabulary
from .base import DecodingSession, LanguageModel, Message

DEFAULT_N_CTX = 8192  # 10 particles x 350 tokens after a 700-token prompt; about 190 MB of f16 KV
DEFAULT_N_SEQ_MAX = 64
MAX_SEQ = 255  # llama.cpp allows 256 sequence ids (LLAMA_MAX_SEQ); one is the prompt's
FLASH_ATTN_DISABLED, FLASH_ATTN_ENABLED = 0, 1  # enum llama_flash_attn_type
PROMPT_BATCH = 512  # prompt tokens per llama_decode call (llama.cpp's n_batch)

_lib = None
_lib_lock = threading.Lock()


class _Log:
    """llama.cpp's log lines, kept (not printed) so that errors can quote them."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=40)
        self.echo = False
        self._partial = ""

    def add(self, level: int, text: bytes | None) -> None:
        message = (text or b"").decode("utf-8", errors="replace")
        if self.echo:
            import sys

            print(message, end="", file=sys.stderr, flush=True)
        self._partial += message
        if "\n" in self._partial:
            *done, self._partial = self._partial.split("\n")
            self.lines.extend(line for line in done if line.strip())

    def mark(self) -> None:
        """Forget earlier lines: the next error quotes only what follows."""
        self.lines.clear()

    def recent(self, words: Sequence[str] = ("error", "fail", "invalid", "unknown", "not ")) -> str:
        picked = [line.strip() for line in self.lines if any(w in line.lower() for w in words)]
        return "; ".join(picked[-3:])


_LOG = _Log()
_log_callback = None  # keeps the ctypes callback alive


def _llama():
    """The low-level ``llama_cpp`` module, initialised once, its logging captured."""
    global _lib, _log_callback
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        # llama.cpp's CPU threads are an OpenMP team that meets at a barrier after every graph
        # node, so how idle threads wait decides the speed: libgomp's default (spin briefly,
        # then sleep) measured 45 ms per 10-row step on an idle 2-core machine, against 82 ms
        # with OMP_WAIT_POLICY=PASSIVE (and 8 against 25 ms for one row). On a machine whose
        # cores are all busy with other work, PASSIVE is the better choice; libgomp reads the
        # variable once, when it is first loaded, so a user who wants it sets it before start.
        try:
            import llama_cpp
        except ImportError as err:  # not installed, or its shared library failed to load
            raise ModelError(
                f"the llamacpp backend needs llama-cpp-python ({err}): "
                "run `pip install llama-cpp-python` (it compiles llama.cpp, about 10 minutes)"
            ) from err
        lib = llama_cpp.llama_cpp
        _log_callback = lib.llama_log_callback(lambda level, text, _data: _LOG.add(level, text))
        lib.llama_log_set(_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        _lib = lib
        return lib


def _default_threads() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def _limit_hint(name: str) -> str:
    flag = {"n_ctx": " (CLI: --n-ctx)"}.get(name, "")
    return f"pass a larger {name}{flag}, e.g. load_model(..., backend='llamacpp', {name}=...)"


class LlamaCppModel(LanguageModel):
    """A GGUF model run by llama.cpp behind awrs's batched interface.

    Args:
        path: the ``.gguf`` file.
        n_ctx: KV cells shared by all rows of all sessions (see the module docstring).
        n_seq_max: rows alive at once (at most 255).
        n_threads: CPU threads for llama.cpp (default: the cores this process may use).
        n_gpu_layers: layers offloaded to a GPU when llama.cpp was built with one (0: CPU).
        flash_attn: use llama.cpp's flash attention (worth it on GPUs; on the CPU it was no
            faster and it accumulates in float16).
        name: shown in results and messages (default: the file name without ``.gguf``).
        log: print llama.cpp's own log on stderr (it is otherwise kept for error messages).
    """

    backend = "llamacpp"

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_seq_max: int = DEFAULT_N_SEQ_MAX,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        name: str | None = None,
        log: bool = False,
    ) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"no GGUF file at {path}: the llamacpp backend reads a .gguf file")
        if not 1 <= int(n_seq_max) <= MAX_SEQ:
            raise ModelError(f"n_seq_max must be between 1 and {MAX_SEQ} (llama.cpp's limit), got {n_seq_max}")
        if int(n_ctx) < 16:
            raise ModelError(f"n_ctx must be at least 16, got {n_ctx}")
        n_threads = _default_threads() if n_threads is None else int(n_threads)
        if n_threads < 1:
            raise ModelError(f"n_threads must be at least 1, got {n_threads}")
        lib = _llama()
        self._lib = lib
        self.path = path
        self.name = name or path.stem
        self.n_threads = n_threads
        self.n_seq_max = int(n_seq_max)
        _LOG.echo = log
        _LOG.mark()

        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = int(n_gpu_layers)
        model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            detail = _LOG.recent() or "see llama.cpp's log (log=True)"
            raise ModelError(f"llama.cpp could not load {path} as a GGUF model: {detail}")
        self._model = model

        cparams = lib.llama_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_batch = max(PROMPT_BATCH, self.n_seq_max)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = self.n_seq_max + 1  # + the prompt's sequence
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # one pool of cells: shared prefixes are stored once
        # Flash attention on the CPU accumulates V in float16. The plain path (float32 softmax)
        # was as fast here and a little closer to the float32 transformers backend (mean KL
        # 4.6e-3 against 5.2e-3 over 320 sampled rows).
        cparams.flash_attn_type = FLASH_ATTN_ENABLED if flash_attn else FLASH_ATTN_DISABLED
        cparams.no_perf = True
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            lib.llama_model_free(model)
            detail = _LOG.recent() or "see llama.cpp's log (log=True)"
            raise ModelError(
                f"llama.cpp could not create a context for {path.name} with n_ctx={n_ctx}, "
                f"n_seq_max={n_seq_max} (out of memory? lower them): {detail}"
            )
        self._ctx = ctx
        self._mem = lib.llama_get_memory(ctx)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        self.n_batch = int(lib.llama_n_batch(ctx))  # llama.cpp caps it at n_ctx
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._finalizer = weakref.finalize(self, _free_model, lib, model, ctx, self._batch)

        self._vocab_p = lib.llama_model_get_vocab(model)
        self._n_vocab = int(lib.llama_vocab_n_tokens(self._vocab_p))
        self.vocab = self._read_vocabulary()
        self.max_context = self.n_ctx

        self._prompt_seq = self.n_seq_max  # holds the last prompt between sessions
        self._prompt_tokens: tuple[int, ...] = ()
        self._prompt_logits: np.ndarray | None = None  # (V,) float32 log-probabilities
        self._free: list[int] = list(range(self.n_seq_max - 1, -1, -1))  # pop() gives 0 first
        self._orphans: list[int] = []  # ids of sessions garbage-collected unclosed; freed lazily
        self._template = None

    # -- vocabulary and prompts -------------------------------------------------------------

    def _piece(self, token: int, special: bool = True) -> bytes:
        lib = self._lib
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_token_to_piece(self._vocab_p, token, buf, size, 0, special)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def _read_vocabulary(self) -> Vocabulary:
        lib = self._lib
        vocab = self._vocab_p
        control = lib.LLAMA_TOKEN_ATTR_CONTROL
        buf = ctypes.create_string_buffer(256)
        tokens: list[bytes] = []
        special: set[int] = set()
        eos: set[int] = set()
        for i in range(self._n_vocab):
            n = lib.llama_token_to_piece(vocab, i, buf, 256, 0, True)
            tokens.append(buf.raw[:n] if n >= 0 else self._piece(i))
            if lib.llama_vocab_get_attr(vocab, i) & control:
                special.add(i)
        # The same rule as the transformers backend (awrs.vocab.vocabulary_from_hf): the declared
        # EOS (and end-of-turn) token plus special tokens that are known end markers. Not
        # llama.cpp's own end-of-generation set, which adds fill-in-the-middle markers.
        for i in (lib.llama_vocab_eos(vocab), lib.llama_vocab_eot(vocab)):
            if 0 <= i < self._n_vocab:
                eos.add(int(i))
        for i in special:
            if tokens[i].decode("utf-8", errors="replace") in KNOWN_END_TOKENS:
                eos.add(i)
        if not eos:
            raise ModelError(f"{self.path.name} names no end-of-sequence token")
        return Vocabulary(tuple(tokens), frozenset(eos), frozenset(special | eos))

    def _tokenize(self, text: str, *, add_special: bool) -> list[int]:
        lib = self._lib
        data = text.encode("utf-8")
        size = len(data) + 16
        while True:
            out = (lib.llama_token * size)()
            n = lib.llama_tokenize(self._vocab_p, data, len(data), out, size, add_special, True)
            if n >= 0:
                return [int(t) for t in out[:n]]
            size = -n

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text, add_special=True)

    def _special_text(self, token: int) -> str:
        if 0 <= token < self._n_vocab:
            return self.vocab.tokens[token].decode("utf-8", errors="replace")
        return ""

    def apply_chat_template(self, messages: Sequence[Message]) -> list[int]:
        if self._template is None:
            source = self._lib.llama_model_chat_template(self._model, None)
            if not source:
                raise ModelError(f"{self.name} has no chat template; prompt it without --chat")
            self._template = _compile_template(source.decode("utf-8"))
        lib, vocab = self._lib, self._vocab_p
        text = self._template.render(
            messages=list(messages),
            add_generation_prompt=True,
            bos_token=self._special_text(lib.llama_vocab_bos(vocab)),
            eos_token=self._special_text(lib.llama_vocab_eos(vocab)),
        )
        return self._tokenize(text, add_special=False)

    # -- decoding ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise ModelError(f"{self.name} was closed; load it again")

    def _collect_orphans(self) -> None:
        while self._orphans:
            self._release(self._orphans.pop())

    def _release(self, seq: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._free.append(seq)

    def _take(self, wanted: int, held: int) -> None:
        """Fail unless ``wanted`` more ids are free for a session holding ``held``."""
        if wanted > 0 and wanted > len(self._free):
            in_use = self.n_seq_max - len(self._free)
            raise ModelError(
                f"a session needs {held + wanted} rows but the llamacpp backend holds at most "
                f"n_seq_max={self.n_seq_max} rows at once ({in_use} in use by open sessions); "
                + _limit_hint("n_seq_max") + f" (at most {MAX_SEQ}), or use fewer particles"
            )

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int],
                outputs: Sequence[bool]) -> int:
        lib, batch = self._lib, self._batch
        n = len(tokens)
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = tokens[i]
            batch.pos[i] = positions[i]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seqs[i]
            batch.logits[i] = outputs[i]
        return int(lib.llama_decode(self._ctx, batch))

    def _decode_error(self, code: int, what: str) -> ModelError:
        if code == 1:
            return ModelError(
                f"the KV cache is full while {what}: n_ctx={self.n_ctx} cells are shared by the "
                "prompt and every row's tokens; " + _limit_hint("n_ctx") + " or use fewer particles"
            )
        detail = _LOG.recent() or "see llama.cpp's log (log=True)"
        return ModelError(f"llama_decode failed (code {code}) while {what}: {detail}")

    def _logits(self, rows: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self._n_vocab)).copy()

    def _prompt_state(self, ids: tuple[int, ...]) -> np.ndarray:
        """Make the prompt sequence hold ``ids``; its next-token log-probabilities (V,)."""
        lib, seq = self._lib, self._prompt_seq
        if ids == self._prompt_tokens and self._prompt_logits is not None:
            return self._prompt_logits
        cached = self._prompt_tokens
        common = 0
        for a, b in zip(cached, ids):
            if a != b:
                break
            common += 1
        keep = min(common, len(ids) - 1)  # re-evaluate at least the last token, for its logits
        self._prompt_tokens, self._prompt_logits = (), None
        if not lib.llama_memory_seq_rm(self._mem, seq, keep, -1):
            lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            keep = 0
        _LOG.mark()
        for start in range(keep, len(ids), self.n_batch):
            chunk = ids[start:start + self.n_batch]
            last = start + len(chunk) == len(ids)
            code = self._decode(
                chunk, range(start, start + len(chunk)), [seq] * len(chunk),
                [last and i == len(chunk) - 1 for i in range(len(chunk))],
            )
            if code != 0:
                lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                raise self._decode_error(code, f"evaluating the prompt ({len(ids)} tokens)")
        self._prompt_tokens, self._prompt_logits = ids, _log_softmax(self._logits(1))[0]
        return self._prompt_logits

    def _checked_prompt(self, prompt_ids: Sequence[int]) -> tuple[int, ...]:
        ids = tuple(int(i) for i in prompt_ids)
        if not ids:
            start = self._lib.llama_vocab_bos(self._vocab_p)
            if not 0 <= start < self._n_vocab:
                start = self._lib.llama_vocab_eos(self._vocab_p)
            ids = (int(start),)
        bad = [i for i in ids if not 0 <= i < self._n_vocab]
        if bad:
            raise ModelError(f"prompt token ids {bad[:5]} are outside the vocabulary (size {self._n_vocab})")
        if len(ids) >= self.n_ctx:
            raise ModelError(
                f"the prompt has {len(ids)} tokens but the llamacpp backend's context holds "
                f"n_ctx={self.n_ctx}; " + _limit_hint("n_ctx")
            )
        return ids

    def open(self, prompt_ids: Sequence[int], rows: int) -> DecodingSession:
        return self.open_many([prompt_ids], [rows])

    def open_many(self, prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> DecodingSession:
        """Rows of several prompts in one session; each prompt is evaluated once and its cells
        are shared with its rows (rows of different prompts have their own positions)."""
        checked = [self._checked_prompt(p) for p in prompts]
        counts = [int(n) for n in rows]
        if any(n < 0 for n in counts):
            raise ModelError(f"rows must be >= 0, got {counts}")
        self._check_open()
        self._collect_orphans()
        self._take(sum(counts), 0)
        seqs: list[int] = []
        lengths: list[int] = []
        logprobs: list[np.ndarray] = []
        for ids, n in zip(checked, counts):
            prompt_logprobs = self._prompt_state(ids)
            for _ in range(n):
                s = self._free.pop()
                self._lib.llama_memory_seq_cp(self._mem, self._prompt_seq, s, -1, -1)
                seqs.append(s)
                lengths.append(len(ids))
                logprobs.append(prompt_logprobs)
        table = np.stack(logprobs) if logprobs else np.zeros((0, self._n_vocab), dtype=np.float32)
        return LlamaCppSession(self, seqs, np.array(lengths, dtype=np.int64), table)

    def close(self) -> None:
        """Free llama.cpp's model and context now (the model is unusable afterwards)."""
        self._finalizer()

    def __repr__(self) -> str:
        return (f"<LlamaCppModel {self.name} V={len(self.vocab)} n_ctx={self.n_ctx} "
                f"n_seq_max={self.n_seq_max} n_threads={self.n_threads}>")


class LlamaCppSession(DecodingSession):
    """Rows of one prompt; row ``i`` is llama.cpp sequence ``self._seqs[i]``."""

    def __init__(self, model: LlamaCppModel, seqs: list[int], lengths: np.ndarray, logprobs: np.ndarray):
        self._model = model
        self._seqs = seqs
        self._lengths = lengths  # tokens in each row (prompt included)
        self._logprobs = logprobs
        self._broken: str | None = None
        # an unclosed session hands its ids back when collected (freed at the next open/step)
        self._finalizer = weakref.finalize(self, model._orphans.extend, seqs)

    @property
    def rows(self) -> int:
        return len(self._seqs)

    def logprobs(self) -> np.ndarray:
        return self._logprobs

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        model = self._model
        if self._broken:
            raise ModelError(f"this decoding session cannot continue: {self._broken}")
        if not self._finalizer.alive:
            raise ModelError("this decoding session was closed")
        parents = np.asarray(parents, dtype=np.int64).reshape(-1)
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        old = self._seqs
        if len(parents) != len(tokens):
            raise ModelError(f"step got {len(parents)} parents but {len(tokens)} tokens")
        if len(parents) and (parents.min() < 0 or parents.max() >= len(old)):
            raise ModelError(f"parents must be row indices in [0, {len(old)}), got {parents.tolist()}")
        if len(tokens) and (tokens.min() < 0 or tokens.max() >= model._n_vocab):
            raise ModelError(f"token ids must be in [0, {model._n_vocab}), got {tokens.tolist()}")
        longest = int(self._lengths[parents].max()) if len(parents) else 0
        if longest + 1 > model.n_ctx:
            raise ModelError(
                f"a row would reach {longest + 1} tokens but the llamacpp backend's context "
                f"holds n_ctx={model.n_ctx}; " + _limit_hint("n_ctx")
            )
        model._check_open()
        model._collect_orphans()
        lib, mem = model._lib, model._mem

        # Which old rows survive; their first child inherits the sequence id.
        seqs: list[int | None] = [None] * len(parents)
        claimed = np.zeros(len(old), dtype=bool)
        extra: list[int] = []
        for i, p in enumerate(parents.tolist()):
            if claimed[p]:
                extra.append(i)
            else:
                claimed[p] = True
                seqs[i] = old[p]
        dropped = np.flatnonzero(~claimed).tolist()
        model._take(len(extra) - len(dropped), len(old))  # checked before anything changes
        for j in dropped:  # rows without children: free their cells
            model._release(old[j])
        for i in extra:  # sources are kept ids: none is overwritten before it is copied
            dst = model._free.pop()
            lib.llama_memory_seq_cp(mem, old[parents[i]], dst, -1, -1)
            seqs[i] = dst
        self._seqs = [int(s) for s in seqs]
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, model._orphans.extend, self._seqs)

        rows = len(self._seqs)
        positions = self._lengths[parents]
        if rows == 0:
            self._logprobs = np.zeros((0, model._n_vocab), dtype=np.float32)
            self._lengths = positions
            return
        _LOG.mark()
        code = model._decode(tokens.tolist(), positions.tolist(), self._seqs, [True] * rows)
        if code != 0:
            self._broken = str(model._decode_error(code, f"extending {rows} rows to {longest + 1} tokens"))
            self.close()
            raise ModelError(self._broken)
        self._lengths = positions + 1
        self._logprobs = _log_softmax(model._logits(rows))

    def close(self) -> None:
        if self._finalizer.detach() is not None:
            for s in self._seqs:
                self._model._release(s)
        self._seqs = []
        self._logprobs = np.zeros((0, self._model._n_vocab), dtype=np.float32)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, in place."""
    logits -= logits.max(axis=1, keepdims=True)
    norm = np.log(np.exp(logits).sum(axis=1, keepdims=True, dtype=np.float64)).astype(np.float32)
    logits -= norm
    return logits


def _free_model(lib, model, ctx, batch) -> None:
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)


def _compile_template(source: str):
    """A chat template from GGUF metadata, compiled the way transformers compiles its own."""
    try:
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as err:
        raise ModelError(f"chat templates need jinja2 ({err}): pip install jinja2") from err

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateError as err:
        raise ModelError(f"the model's chat template does not compile: {err}") from err
