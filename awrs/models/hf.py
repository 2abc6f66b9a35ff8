"""Hugging Face transformers backend: batched, KV-cached decoding on CPU or GPU.

One forward pass extends every live row by one token. All rows of a session have the same
length (they share the prompt and grow in lock step), so no padding or attention mask is
needed; dropping or copying rows is an ``index_select`` on the cache.

Not here: finding or converting model files (see :mod:`awrs.models.embedded`).
"""

from __future__ import annotations

import copy
import inspect
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError
from .base import DecodingSession, LanguageModel, merge_equal_histories, step_arguments
from .gguf_tokens import DeclaredTokens
from .hf_tokenizer import TokenizerPrompts, fit_width, tokenizer_vocabulary

PROMPT_CACHE_SIZE = 4  # prompts whose KV cache is kept for reuse by later sessions


@contextmanager
def quiet_transformers():
    """Hide transformers' progress bars while loading, then restore its setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class HFModel(TokenizerPrompts, LanguageModel):
    """A causal LM from transformers behind awrs's batched interface.

    Args:
        model: a loaded ``AutoModelForCausalLM`` (put in eval mode here).
        tokenizer: its tokenizer.
        name: shown in results and messages.
        declared: for a model read from a GGUF file, what that file declares about its tokens:
            its control tokens, not the tokenizer's flags, are the special ones, and its unused
            tokens write nothing (as on llama.cpp).
    """

    backend = "hf"

    def __init__(self, model, tokenizer, name: str = "hf", *, declared: DeclaredTokens | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.vocab = tokenizer_vocabulary(tokenizer, generation_eos, declared)
        self.device = next(model.parameters()).device
        self._logit_width = model.get_output_embeddings().weight.shape[0]
        self._prompt_cache: OrderedDict[tuple[int, ...], tuple[object, torch.Tensor]] = OrderedDict()
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        # transformers 5.x renamed `past_key_values` to `cache`; accept both generations.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_directory(cls, path: str | Path, *, dtype: str = "float32", device: str = "cpu",
                       declared: DeclaredTokens | None = None) -> HFModel:
        """Load a local Hugging Face model directory (nothing is downloaded); ``declared``: what
        its GGUF source declares about its tokens, when it was converted from one."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is not a Hugging Face model directory (no config.json); "
                "pass a local model folder or a .gguf file"
            )
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=getattr(torch, dtype), local_files_only=True
                ).to(device)
        except (OSError, ValueError) as err:
            raise ModelError(f"could not load the model in {path}: {err}") from err
        return cls(model, tokenizer, name=path.name, declared=declared)

    # -- decoding ---------------------------------------------------------------------------

    @torch.inference_mode()
    def _forward(self, input_ids: torch.Tensor, cache, **extra) -> tuple[object, torch.Tensor]:
        out = self.model(
            input_ids=input_ids, use_cache=True, logits_to_keep=1, **{self._cache_arg: cache}, **extra
        )
        logits = out.logits[:, -1, :].float()
        # The DynamicCache passed in is updated in place.
        return cache, torch.log_softmax(logits, dim=-1)

    def _prompt_state(self, prompt_ids: tuple[int, ...]):
        hit = self._prompt_cache.get(prompt_ids)
        if hit is not None:
            self._prompt_cache.move_to_end(prompt_ids)
            return copy.deepcopy(hit[0]), hit[1]
        from transformers import DynamicCache

        ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        cache, logprobs = self._forward(ids, DynamicCache())
        self._prompt_cache[prompt_ids] = (copy.deepcopy(cache), logprobs)
        while len(self._prompt_cache) > PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return cache, logprobs

    def _checked_prompt(self, prompt_ids: Sequence[int]) -> tuple[int, ...]:
        ids = tuple(int(i) for i in prompt_ids)
        if not ids:
            start = self.tokenizer.bos_token_id
            if start is None:
                start = self.tokenizer.eos_token_id
            ids = (int(start),)
        if self.max_context and len(ids) >= self.max_context:
            raise ModelError(
                f"the prompt has {len(ids)} tokens; {self.name} allows at most {self.max_context}"
            )
        return ids

    def open(self, prompt_ids: Sequence[int], rows: int) -> DecodingSession:
        ids = self._checked_prompt(prompt_ids)
        cache, logprobs = self._prompt_state(ids)
        return HFSession(self, cache, logprobs, len(ids), rowmap=np.zeros(int(rows), dtype=np.int64))

    def open_many(self, prompts: Sequence[Sequence[int]], rows: Sequence[int]) -> DecodingSession:
        """Different prompts in one batch: left-padded, with an attention mask and positions."""
        from transformers import DynamicCache

        checked = [self._checked_prompt(p) for p in prompts]
        if len(set(checked)) == 1:
            return self.open(checked[0], int(sum(rows)))
        width = max(len(p) for p in checked)
        pad = self.tokenizer.pad_token_id
        pad = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in checked], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in checked], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, logprobs = self._forward(ids, DynamicCache(), attention_mask=mask, position_ids=positions)
        lengths = torch.tensor([len(p) for p in checked], device=self.device)
        rowmap = np.repeat(np.arange(len(checked), dtype=np.int64), [int(n) for n in rows])
        return HFSession(self, cache, logprobs, width, mask=mask, next_position=lengths, rowmap=rowmap)


class HFSession(DecodingSession):
    """Rows of KV cache in lock step, one cache row per distinct token history: rows whose
    histories are equal (resampled copies that drew the same token, or every row while the
    constraint forces the text) share a cache row and one evaluation, so a step costs what its
    distinct histories cost. ``rowmap[row]`` is a row's cache row. With ``mask`` (rows of
    different prompts, left-padded), every forward pass carries the attention mask and each
    cache row's own positions."""

    extendable = True

    def __init__(
        self, model: HFModel, cache, logprobs: torch.Tensor, length: int, *, rowmap: np.ndarray,
        mask: torch.Tensor | None = None, next_position: torch.Tensor | None = None,
    ):
        self._model = model
        self._cache = cache
        self._length = length
        self._mask = mask
        self._next_position = next_position
        self._logprobs_t = logprobs  # (cache rows, V)
        self._rowmap = np.asarray(rowmap, dtype=np.int64)
        self._logprobs: np.ndarray | None = None
        self.evaluated = 0  # rows evaluated by step() so far (rows sharing a history count once)

    @property
    def rows(self) -> int:
        return len(self._rowmap)

    def logprobs(self) -> np.ndarray:
        if self._logprobs is None:
            width = len(self._model.vocab)
            logprobs = self._logprobs_t.cpu().numpy()
            if logprobs.shape[1] != width:  # some models pad the output layer past the tokenizer
                logprobs = fit_width(logprobs, width)
            identity = len(self._rowmap) == len(logprobs) and np.array_equal(self._rowmap, np.arange(len(logprobs)))
            self._logprobs = logprobs if identity else logprobs[self._rowmap]
        return self._logprobs

    def step(self, parents: np.ndarray, tokens: np.ndarray) -> None:
        model = self._model
        limit = model.max_context
        if limit and self._length + 1 > limit:
            raise ModelError(f"the context reached {model.name}'s limit of {limit} tokens")
        parents, tokens = step_arguments(parents, tokens, self.rows)
        # one cache row and one evaluation per distinct (history, token)
        first, group = merge_equal_histories(self._rowmap, parents, tokens)
        source = self._rowmap[parents[first]]
        if len(source) != self._logprobs_t.shape[0] or not np.array_equal(source, np.arange(len(source))):
            index = torch.as_tensor(source, device=model.device)
            self._cache.reorder_cache(index)
            if self._mask is not None:
                self._mask = self._mask[index]
                self._next_position = self._next_position[index]
        self._rowmap = group
        self._logprobs = None
        self._length += 1
        if len(first) == 0:
            self._logprobs_t = self._logprobs_t[:0]
            return
        input_ids = torch.as_tensor(tokens[first], device=model.device)[:, None]
        extra = {}
        if self._mask is not None:
            ones = torch.ones((len(first), 1), dtype=self._mask.dtype, device=model.device)
            self._mask = torch.cat([self._mask, ones], dim=1)
            extra = {"attention_mask": self._mask, "position_ids": self._next_position[:, None]}
            self._next_position = self._next_position + 1
        self._cache, self._logprobs_t = model._forward(input_ids, self._cache, **extra)
        self.evaluated += len(first)

    def extend(self, prompt_ids: Sequence[int], rows: int) -> None:
        """New rows after a new prompt: its cache (one row) is left-padded (or the session's) to
        one width and joined along the batch; masks and positions keep every row its own."""
        model = self._model
        ids = model._checked_prompt(prompt_ids)
        cache, logprobs = model._prompt_state(ids)
        rows = int(rows)
        device = model.device
        held = int(self._logprobs_t.shape[0])  # cache rows
        if self._mask is None:  # rows of one prompt so far: make masks and positions explicit
            self._mask = torch.ones((held, self._length), dtype=torch.long, device=device)
            self._next_position = torch.full((held,), self._length, dtype=torch.long, device=device)
        width = max(self._length, len(ids))
        if width > self._length:
            _left_pad(self._cache, width - self._length)
            pad = torch.zeros((held, width - self._length), dtype=self._mask.dtype, device=device)
            self._mask = torch.cat([pad, self._mask], dim=1)
        _left_pad(cache, width - len(ids))
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
        new_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids)], dtype=self._mask.dtype, device=device)
        self._mask = torch.cat([self._mask, new_mask], dim=0)
        self._next_position = torch.cat(
            [self._next_position, torch.full((1,), len(ids), dtype=torch.long, device=device)])
        self._logprobs_t = torch.cat([self._logprobs_t, logprobs], dim=0)
        self._rowmap = np.concatenate([self._rowmap, np.full(rows, held, dtype=np.int64)])
        self._length = width
        self._logprobs = None

    def close(self) -> None:
        self._cache = None


def _left_pad(cache, width: int) -> None:
    """Add ``width`` empty positions before every row's keys and values (masked out)."""
    if width <= 0:
        return
    for layer in cache.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name)
            pad = torch.zeros(tensor.shape[:2] + (width,) + tensor.shape[3:], dtype=tensor.dtype,
                              device=tensor.device)
            setattr(layer, name, torch.cat([pad, tensor], dim=2))

