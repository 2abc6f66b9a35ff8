"""The hand-off between vLLM's engine step and awrs's sampler, inside a V1 logits processor.

An engine step computes the next-token logits of every live request and samples one token for
each. awrs must see a row's log-probabilities before it picks that row's token, so the step
runs in a worker thread and the processor, in the middle of it, hands the rows' log-softmax to
the caller and waits for the tokens it chose; it then sets every other logit to -inf, so the
sampler can only take the chosen token.

vLLM builds the processor itself (it is given a class), so each model makes its own subclass
bound to its own :class:`Handoff` (:func:`capture_processor`): no state is shared between models.
vLLM's rows move and swap between steps; the processor follows them through each step's batch
update and finds a row's request by the key awrs put in its ``SamplingParams.extra_args``.

Not here: which requests exist and what their tokens are (:mod:`awrs.models.vllm`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

#: the ``SamplingParams.extra_args`` entry that marks a request as an awrs row
KEY = "awrs_row"


class HandoffCancelled(Exception):
    """The caller stopped waiting (its session closed or failed)."""


class Handoff:
    """One step's exchange: the processor publishes ``{key: log-probabilities}`` (or a problem)
    and waits; the caller reads them and answers with ``{key: token}``.

    ``expected``: the keys whose rows must all be in the step, each with its whole prompt
    evaluated, or the step's log-probabilities are not what awrs needs (a request preempted
    for want of KV cache, or a prefill split over steps): then the problem is published
    instead and the step runs on without forcing anything.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self.expected: frozenset[int] = frozenset()
        self.unfinished: Callable[[], set[int]] = set  # keys whose prompts are not yet all evaluated
        self._published: dict[int, torch.Tensor] | None = None
        self._problem: str | None = None
        self._choices: dict[int, int] | None = None
        self._cancelled = False

    # -- engine thread --------------------------------------------------------------------

    def exchange(self, logprobs: dict[int, torch.Tensor]) -> dict[int, int]:
        """Publish a step's rows and wait for the chosen tokens (empty when cancelled)."""
        missing = self.expected - logprobs.keys()
        partial = self.expected & self.unfinished()
        problem = None
        if missing:
            problem = (f"{len(missing)} of {len(self.expected)} rows were left out of an engine step: vLLM "
                       "preempted them because its KV cache is full")
        elif partial:
            problem = (f"the prompts of {len(partial)} rows were split over engine steps (chunked prefill): "
                       "the tokens added in one step exceeded its budget (max_model_len and a block per row); "
                       "add fewer or shorter prompts at once")
        with self._ready:
            self._published, self._problem, self._choices = logprobs, problem, None
            self._ready.notify_all()
            if problem is not None:
                return {}
            while self._choices is None and not self._cancelled:
                self._ready.wait()
            choices, self._choices, self._published = self._choices or {}, None, None
            return choices

    # -- caller's thread ------------------------------------------------------------------

    def begin(self, expected: Iterable[int]) -> None:
        """Before an engine step: the rows it must carry."""
        with self._ready:
            self.expected = frozenset(expected)
            self._published, self._problem, self._choices, self._cancelled = None, None, None, False

    def wait_published(self, step_done: Callable[[], bool], poll: float = 0.05) -> dict[int, torch.Tensor]:
        """The published rows; raises :class:`HandoffCancelled` with the problem, or when the
        step ended without publishing (``step_done()``: it failed or carried no awrs row)."""
        with self._ready:
            while self._published is None and not self._cancelled:
                if step_done():
                    raise HandoffCancelled("the engine step ended without reaching the logits processor")
                self._ready.wait(poll)
            if self._cancelled:
                raise HandoffCancelled("cancelled")
            if self._problem is not None:
                raise HandoffCancelled(self._problem)
            return self._published

    def choose(self, choices: dict[int, int]) -> None:
        with self._ready:
            self._choices = dict(choices)
            self._ready.notify_all()

    def cancel(self) -> None:
        """Let a waiting processor return without forcing anything."""
        with self._ready:
            self._cancelled = True
            self._ready.notify_all()


class _CaptureProcessor(LogitsProcessor):
    """Hands its awrs rows' log-softmax to :attr:`handoff` and forces the tokens chosen."""

    handoff: Handoff  # set on the subclass that capture_processor() makes

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self._keys: dict[int, int] = {}  # batch row -> awrs key

    def is_argmax_invariant(self) -> bool:
        return False  # it replaces the logits, so it must run for greedy requests too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        keys = self._keys
        for row in batch_update.removed:
            keys.pop(row, None)
        for row, params, _prompt, _output in batch_update.added:
            key = (params.extra_args or {}).get(KEY) if params is not None else None
            if key is None:
                keys.pop(row, None)
            else:
                keys[row] = int(key)
        for a, b, direction in batch_update.moved:
            first, second = keys.pop(a, None), keys.pop(b, None)
            if first is not None:
                keys[b] = first
            if second is not None and direction == MoveDirectionality.SWAP:
                keys[a] = second

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = sorted(row for row in self._keys if row < logits.shape[0])
        if not rows and not self.handoff.expected:
            return logits
        index = torch.tensor(rows, dtype=torch.long, device=logits.device)
        logprobs = torch.log_softmax(logits.index_select(0, index).float(), dim=-1).cpu()
        captured = {self._keys[row]: logprobs[i] for i, row in enumerate(rows)}
        choices = self.handoff.exchange(captured)
        if choices:
            forced = [(row, choices[self._keys[row]]) for row in rows if self._keys[row] in choices]
            if forced:
                which = torch.tensor([r for r, _ in forced], dtype=torch.long, device=logits.device)
                tokens = torch.tensor([t for _, t in forced], dtype=torch.long, device=logits.device)
                logits[which] = float("-inf")
                logits[which, tokens] = 0.0
        return logits


def capture_processor(handoff: Handoff) -> type[LogitsProcessor]:
    """A processor class bound to ``handoff`` (vLLM instantiates it inside the engine)."""
    return type("AwrsCaptureProcessor", (_CaptureProcessor,), {"handoff": handoff})
