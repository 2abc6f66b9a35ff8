"""llama.cpp backend (through ``llama-cpp-python``): batched, KV-cached decoding of a GGUF file.

The class reads the GGUF file it is given as it is (``load_model`` gives it an F16 copy of the
embedded model, see :func:`awrs.models.embedded.requantized_gguf`). One llama.cpp context per
model holds a *unified* KV cache of ``n_ctx`` cells shared by every sequence, so:

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
  follows the longest common prefix (a shared system prompt, for example), cut down to a
  multiple of ``prompt_chunk`` tokens. Prompts are evaluated in chunks that start at
  multiples of ``prompt_chunk`` from position 0, whether fresh, continued or prefilled a
  chunk per step, so a re-used prefix leaves exactly the batches a fresh evaluation would
  run: the log-probabilities are bit-identical to a fresh evaluation's when no other rows
  hold cells meanwhile (beside running rows, the prompt's cells land between theirs and
  attention adds up in another order, re-used prefix or not).

Sessions of one model may overlap: they draw sequence ids from one pool of ``n_seq_max``.

Limits (all constructor arguments, and ``load_model(..., backend="llamacpp", name=value)``):

* ``n_ctx`` (default 8192, rounded up to a multiple of 256 by llama.cpp): KV cells shared by all
  rows, the prompt counted once. A row can be at most ``n_ctx`` tokens long, and all rows
  together need one cell per distinct token (prompt + rows x generated tokens at most, less
  where rows share ancestors). 10 particles x 64 tokens after a 50-token prompt use at most
  690 cells.
* ``n_seq_max`` (default 64, at most 255): rows alive at once, over all open sessions.
* ``n_threads`` (default: one per core that other programs leave free, measured at load and
  again at each session's start; see :mod:`awrs.models.cpu_load`).

Exceeding a limit raises :class:`~awrs.errors.ModelError` naming it and how to raise it.

The vocabulary comes from llama.cpp's own tokenizer data (``llama_token_to_piece`` with special
tokens rendered; the tokens the file declares as control are special), EOS ids are the declared
EOS and end-of-turn tokens plus special tokens that are known end markers (the transformers
backend's rule, :func:`awrs.vocab.end_ids`), and the chat
template is the GGUF's, rendered with jinja2 as transformers renders it.

Pieces: ``llamacpp_lib.py`` (the binding, its log), ``llamacpp_pool.py`` (sequence ids),
``llamacpp_session.py`` (a session's rows and its step), ``chat_template.py`` (jinja2).
Not here: sampling (see :mod:`awrs.sampling`), the transformers backend (:mod:`awrs.models.hf`).
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..vocab import Vocabulary, end_ids
from .base import DecodingSession, LanguageModel, Message
from .chat_template import compile_template
from .embedded import vocabulary_cache
from .gguf_tokens import declared_tokens
from .cpu_load import LoadWatch
from .llamacpp_lib import LOG, limit_hint, llama
from .llamacpp_pool import MAX_SEQ, SequencePool
from .llamacpp_session import LlamaCppSession, log_softmax

DEFAULT_N_CTX = 8192  # 10 particles x 350 tokens after a 700-token prompt; about 190 MB of f16 KV
DEFAULT_N_SEQ_MAX = 64
FLASH_ATTN_DISABLED, FLASH_ATTN_ENABLED = 0, 1  # enum llama_flash_attn_type
PROMPT_BATCH = 512  # tokens per llama_decode call at most (llama.cpp's n_batch)
PROMPT_CHUNK = 64  # prompt tokens per llama_decode call, cut at multiples of it from position 0

class LlamaCppModel(LanguageModel):
    """A GGUF model run by llama.cpp behind awrs's batched interface.

    Args:
        path: the ``.gguf`` file.
        n_ctx: KV cells shared by all rows of all sessions (see the module docstring).
        n_seq_max: rows alive at once (at most 255).
        n_threads: CPU threads for llama.cpp (default: one per core that other programs leave
            free, measured while the model loads and again whenever a session opens; the
            count changes speed only, never the logits).
        n_gpu_layers: layers offloaded to a GPU when llama.cpp was built with one (0: CPU).
        flash_attn: use llama.cpp's fused attention (the default: on the CPU, with the F16
            weights, it was 1-14 % faster and as close to the float32 transformers backend).
        prompt_chunk: prompt tokens per evaluation batch, and the unit of prefix reuse (a
            common prefix is re-used down to a multiple of it; see the module docstring).
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
        flash_attn: bool = True,
        prompt_chunk: int = PROMPT_CHUNK,
        name: str | None = None,
        log: bool = False,
    ) -> None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"no GGUF file at {path}: the llamacpp backend reads a .gguf file")
        if not 1 <= int(n_seq_max) <= MAX_SEQ:
            raise ModelError(f"n_seq_max must be between 1 and {MAX_SEQ} (llama.cpp's limit), got {n_seq_max}")
        if not 1 <= int(prompt_chunk) <= PROMPT_BATCH:
            raise ModelError(f"prompt_chunk must be between 1 and {PROMPT_BATCH}, got {prompt_chunk}")
        if int(n_ctx) < 16:
            raise ModelError(f"n_ctx must be at least 16, got {n_ctx}")
        if n_threads is not None and int(n_threads) < 1:
            raise ModelError(f"n_threads must be at least 1, got {n_threads}")
        # the load is measured over the model's loading: a window that costs no extra wait
        self._load_watch = LoadWatch() if n_threads is None else None
        lib = llama()
        self._lib = lib
        self.path = path
        self.name = name or path.stem
        self.n_seq_max = int(n_seq_max)
        LOG.echo = log
        LOG.mark()

        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = int(n_gpu_layers)
        model = lib.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            detail = LOG.recent() or "see llama.cpp's log (log=True)"
            raise ModelError(f"llama.cpp could not load {path} as a GGUF model: {detail}")
        self._model = model
        n_threads = self._load_watch.threads(wait=True) if self._load_watch else int(n_threads)
        self.n_threads = n_threads

        cparams = lib.llama_context_default_params()
        cparams.n_ctx = int(n_ctx)
        cparams.n_batch = max(PROMPT_BATCH, self.n_seq_max)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = self.n_seq_max + 1  # + the prompt's sequence
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # one pool of cells: shared prefixes are stored once
        # Flash attention fuses the attention of every row over the shared pool of cells. With
        # the F16 weights it was faster at 1, 10 and 64 rows on a 2-core CPU (AWRS-SMC medians,
        # alternated: 3.2-3.7 against 3.3-4.3 ms per particle-token at 10 particles) and as close
        # to the float32 transformers backend (mean KL 1.2e-5 against 1.5e-5 on six texts); on
        # the shipped Q4_1 file it was as fast as the plain path.
        cparams.flash_attn_type = FLASH_ATTN_ENABLED if flash_attn else FLASH_ATTN_DISABLED
        cparams.no_perf = True
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            lib.llama_model_free(model)
            detail = LOG.recent() or "see llama.cpp's log (log=True)"
            raise ModelError(
                f"llama.cpp could not create a context for {path.name} with n_ctx={n_ctx}, "
                f"n_seq_max={n_seq_max} (out of memory? lower them): {detail}"
            )
        self._ctx = ctx
        self._mem = lib.llama_get_memory(ctx)
        self.n_ctx = int(lib.llama_n_ctx(ctx))
        self.max_rows, self.max_cells = self.n_seq_max, self.n_ctx
        self.n_batch = int(lib.llama_n_batch(ctx))  # llama.cpp caps it at n_ctx
        self.prompt_chunk = min(int(prompt_chunk), self.n_batch)
        # a token may belong to every row that shares its history (one evaluation for all)
        self._batch = lib.llama_batch_init(self.n_batch, 0, self.n_seq_max + 1)
        self._finalizer = weakref.finalize(self, _free_model, lib, model, ctx, self._batch)

        self._vocab_p = lib.llama_model_get_vocab(model)
        self._n_vocab = int(lib.llama_vocab_n_tokens(self._vocab_p))
        self.vocab = self._read_vocabulary()
        self.max_context = self.n_ctx

        self._prompt_seq = self.n_seq_max  # holds the last prompt between sessions
        self._prompt_tokens: tuple[int, ...] = ()
        self._prompt_logits: np.ndarray | None = None  # (V,) float32 log-probabilities
        self.pool = SequencePool(lib, self._mem, self.n_seq_max)
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
        control, user_defined = lib.LLAMA_TOKEN_ATTR_CONTROL, lib.LLAMA_TOKEN_ATTR_USER_DEFINED
        buf = ctypes.create_string_buffer(256)
        tokens: list[bytes] = []
        flagged: set[int] = set()
        for i in range(self._n_vocab):
            n = lib.llama_token_to_piece(vocab, i, buf, 256, 0, True)
            tokens.append(buf.raw[:n] if n >= 0 else self._piece(i))
            attributes = lib.llama_vocab_get_attr(vocab, i)
            if attributes & control and not attributes & user_defined:
                flagged.add(i)
        # llama.cpp also flags text tokens as control by their spelling (Gemma's user-defined
        # "</s>", an HTML tag; Qwen's "</s>", an ordinary piece): special are only the tokens the
        # file itself declares as control, the transformers backend's rule for a GGUF file.
        declared = declared_tokens(self.path)
        declared_control = declared.control_ids()
        special = flagged if declared_control is None else flagged & declared_control
        # EOS: the file's own EOS and end-of-turn ids (llama.cpp's where it names none) plus
        # special tokens that are known end markers. Not llama.cpp's end-of-generation set,
        # which adds fill-in-the-middle markers and text tokens spelt like end markers.
        ends = declared.end_ids or {int(lib.llama_vocab_eos(vocab)), int(lib.llama_vocab_eot(vocab))}
        eos = end_ids(tokens, special, (i for i in ends if 0 <= i < self._n_vocab))
        if not eos:
            raise ModelError(f"{self.path.name} names no end-of-sequence token")
        return Vocabulary(tuple(tokens), eos, frozenset(special | eos), trie_cache=vocabulary_cache())

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

    @property
    def has_chat_template(self) -> bool:
        return bool(self._lib.llama_model_chat_template(self._model, None))

    def apply_chat_template(self, messages: Sequence[Message]) -> list[int]:
        if self._template is None:
            source = self._lib.llama_model_chat_template(self._model, None)
            if not source:
                raise ModelError(f"{self.name} has no chat template; prompt it without --chat")
            self._template = compile_template(source.decode("utf-8"))
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

    def _decode(self, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int | Sequence[int]],
                outputs: Sequence[bool]) -> int:
        """One ``llama_decode``; ``seqs[i]`` is the sequence id of token ``i``, or the ids of
        every sequence it extends (sequences with identical histories share one evaluation)."""
        lib, batch = self._lib, self._batch
        n = len(tokens)
        batch.n_tokens = n
        for i in range(n):
            batch.token[i] = tokens[i]
            batch.pos[i] = positions[i]
            owners = seqs[i]
            if isinstance(owners, int):
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = owners
            else:
                batch.n_seq_id[i] = len(owners)
                row = batch.seq_id[i]
                for k, s in enumerate(owners):
                    row[k] = s
            batch.logits[i] = outputs[i]
        return int(lib.llama_decode(self._ctx, batch))

    def _decode_error(self, code: int, what: str) -> ModelError:
        if code == 1:
            return ModelError(
                f"the KV cache is full while {what}: n_ctx={self.n_ctx} cells are shared by the "
                "prompt and every row's tokens; " + limit_hint("n_ctx") + " or use fewer particles"
            )
        detail = LOG.recent() or "see llama.cpp's log (log=True)"
        return ModelError(f"llama_decode failed (code {code}) while {what}: {detail}")

    def _logits(self, rows: int) -> np.ndarray:
        pointer = self._lib.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(pointer, shape=(rows, self._n_vocab)).copy()

    def forget_prompts(self) -> None:
        """Drop the kept prompt and free its KV cells. Results never need this: a re-used
        prefix gives the log-probabilities of a fresh evaluation, bit for bit."""
        self._lib.llama_memory_seq_rm(self._mem, self._prompt_seq, -1, -1)
        self._prompt_tokens, self._prompt_logits = (), None

    def prefill(self, prompt_ids: Sequence[int], budget: int) -> bool:
        """Evaluate ``budget`` more tokens of a prompt, rounded up to whole chunks of
        ``prompt_chunk`` tokens; True once all are (chunked prefill: a long prompt joins a
        running batch without stalling its rows for long)."""
        return self._prompt_state(self._checked_prompt(prompt_ids), budget) is not None

    def _prompt_state(self, ids: tuple[int, ...], budget: int | None = None) -> np.ndarray | None:
        """Make the prompt sequence hold ``ids``; its next-token log-probabilities (V,).

        With ``budget``, evaluate at most that many new tokens and return None if the prompt
        is not finished (the sequence keeps what was evaluated; the next call continues)."""
        lib, seq = self._lib, self._prompt_seq
        if ids == self._prompt_tokens and self._prompt_logits is not None:
            return self._prompt_logits
        size = self.prompt_chunk
        # Keep whole chunks only (and re-evaluate at least the last token, for its logits): the
        # chunks after them are then the very batches of a fresh evaluation, bit for bit.
        keep = min(common_prefix(self._prompt_tokens, ids), len(ids) - 1) // size * size
        self._prompt_tokens, self._prompt_logits = (), None
        if not lib.llama_memory_seq_rm(self._mem, seq, keep, -1):
            lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
            keep = 0
        LOG.mark()
        end = len(ids) if budget is None else min(len(ids), keep + -(-max(int(budget), 1) // size) * size)
        for start in range(keep, end, size):
            chunk = ids[start:min(start + size, end)]
            last = start + len(chunk) == len(ids)
            code = self._decode(
                chunk, range(start, start + len(chunk)), [seq] * len(chunk),
                [last and i == len(chunk) - 1 for i in range(len(chunk))],
            )
            if code != 0:
                lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
                raise self._decode_error(code, f"evaluating the prompt ({len(ids)} tokens)")
        if end < len(ids):
            self._prompt_tokens = ids[:end]  # a prefix: the next call continues from here
            return None
        self._prompt_tokens, self._prompt_logits = ids, log_softmax(self._logits(1))[0]
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
                f"n_ctx={self.n_ctx}; " + limit_hint("n_ctx")
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
        self._follow_load()
        self.pool.collect_orphans()
        self.pool.require(sum(counts), 0)
        seqs: list[int] = []
        lengths: list[int] = []
        logprobs: list[np.ndarray] = []
        for ids, n in zip(checked, counts):
            self._add_rows(ids, n, seqs, lengths, logprobs)
        table = np.stack(logprobs) if logprobs else np.zeros((0, self._n_vocab), dtype=np.float32)
        histories = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        return LlamaCppSession(self, seqs, np.array(lengths, dtype=np.int64), table, histories)

    def _follow_load(self) -> None:
        """With the default thread count, fit it to the load other programs put on the
        machine since the last look (a long-running server meets a build started later)."""
        if self._load_watch is None:
            return
        n = self._load_watch.threads()
        if n != self.n_threads:
            self._lib.llama_set_n_threads(self._ctx, n, n)
            self.n_threads = n

    def _add_rows(self, ids: tuple[int, ...], n: int, seqs: list[int], lengths: list[int],
                  logprobs: list[np.ndarray]) -> None:
        """Evaluate a prompt (once, cached) and share its cells with ``n`` new row ids."""
        prompt_logprobs = self._prompt_state(ids)
        for _ in range(n):
            seqs.append(self.pool.copy_of(self._prompt_seq))
            lengths.append(len(ids))
            logprobs.append(prompt_logprobs)

    def close(self) -> None:
        """Free llama.cpp's model and context now (the model is unusable afterwards)."""
        self._finalizer()

    def __repr__(self) -> str:
        return (f"<LlamaCppModel {self.name} V={len(self.vocab)} n_ctx={self.n_ctx} "
                f"n_seq_max={self.n_seq_max} n_threads={self.n_threads}>")


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _free_model(lib, model, ctx, batch) -> None:
    lib.llama_batch_free(batch)
    lib.llama_free(ctx)
    lib.llama_model_free(model)


