"""What backends that read a Hugging Face model folder share: its tokenizer, awrs's vocabulary
built from it, and prompts (plain text and chat) turned into token ids.

Used by the transformers backend (:mod:`awrs.models.hf`) and the vLLM backend
(:mod:`awrs.models.vllm`), so both read the same folder into the same vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelError
from ..vocab import Vocabulary, vocabulary_from_hf
from .base import Message
from .embedded import vocabulary_cache
from .gguf_tokens import DeclaredTokens


def tokenizer_vocabulary(tokenizer, generation_eos, declared: DeclaredTokens | None) -> Vocabulary:
    """awrs's vocabulary of ``tokenizer``; ``generation_eos``: the generation config's EOS id(s);
    ``declared``: for a model read from a GGUF file, its control tokens (the special ones) and
    unused tokens (they write nothing), as llama.cpp reads them."""
    if isinstance(generation_eos, int):
        generation_eos = [generation_eos]
    return vocabulary_from_hf(
        tokenizer, generation_eos or (), trie_cache=vocabulary_cache(),
        control_ids=None if declared is None else declared.control_ids(),
        unused_ids=() if declared is None else declared.unused_ids(),
    )


def load_tokenizer(directory: str | Path):
    """``(tokenizer, generation EOS ids, the model's context length or 0)`` of a local folder,
    without loading its weights."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    directory = Path(directory)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"could not read the tokenizer and config in {directory}: {err}") from err
    try:
        eos = GenerationConfig.from_pretrained(directory, local_files_only=True).eos_token_id
    except (OSError, ValueError):  # no generation_config.json: the tokenizer's EOS alone
        eos = None
    length = int(getattr(getattr(config, "text_config", config), "max_position_embeddings", 0) or 0)
    return tokenizer, eos, length


class TokenizerPrompts:
    """Prompts through ``self.tokenizer`` (a transformers tokenizer); ``self.name`` names the model."""

    tokenizer: object
    name: str

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text)["input_ids"])

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def apply_chat_template(self, messages: Sequence[Message]) -> list[int]:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"{self.name} has no chat template; prompt it without --chat")
        ids = self.tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return [int(i) for i in ids]


def fit_width(logprobs: np.ndarray, width: int) -> np.ndarray:
    """Rows cut or padded (with -inf) to the vocabulary's width: some models pad their output
    layer past the tokenizer."""
    if logprobs.shape[1] > width:
        return np.ascontiguousarray(logprobs[:, :width])
    pad = np.full((logprobs.shape[0], width - logprobs.shape[1]), -np.inf, dtype=logprobs.dtype)
    return np.concatenate([logprobs, pad], axis=1)
