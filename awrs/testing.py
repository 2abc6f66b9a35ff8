"""Exact enumeration, for checking samplers and SMC against ground truth.

* :func:`enumerate_estimator` runs a token-level estimator on every branch of its randomness
  and returns each outcome with its exact probability, so that E[w 1{x=a}] = p(a) 1[a valid]
  can be checked to machine precision instead of by Monte Carlo.
* :func:`exact_target` enumerates every text a :class:`~awrs.models.TableModel` can produce
  within a token limit and returns p(x, EOS) 1[x valid]: the unnormalised global target of SMC
  and the probability of the constraint.
* :func:`exact_lcd` gives the distribution locally constrained decoding samples from.
* :func:`bytes_accepted` checks the prefix contract of a constraint on a valid text.

Public so that users can check their own constraints and samplers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .constraints.base import DEAD, Constraint
from .models.table import TableModel
from .sampling.awrs import Draw, inclusion_probability
from .sampling.draw import NO_TOKEN


class _ScriptedDrawer:
    """A drawer whose random choices follow a script; unscripted choices take option 0."""

    def __init__(self, mass: np.ndarray, script: Sequence[int]):
        self._mass = np.asarray(mass, dtype=np.float64).copy()
        self._removed: set[int] = set()
        self._script = list(script)
        self.trace: list[int] = []
        self.widths: list[int] = []
        self.probability = 1.0

    def _choose(self, options: list[tuple[object, float]]):
        position = len(self.trace)
        pick = self._script[position] if position < len(self._script) else 0
        self.trace.append(pick)
        self.widths.append(len(options))
        choice, probability = options[pick]
        self.probability *= probability
        return choice

    def _left(self) -> list[int]:
        return [t for t in np.flatnonzero(self._mass > 0) if int(t) not in self._removed]

    def draw(self) -> int:
        left = self._left()
        if not left:
            return NO_TOKEN
        total = sum(self._mass[t] for t in left)
        return int(self._choose([(int(t), self._mass[t] / total) for t in left]))

    def remove(self, token: int) -> None:
        self._removed.add(token)

    only_accepted = False

    def restrict(self, tokens, *, exact: bool = False) -> None:
        self.only_accepted = self.only_accepted or exact
        keep = {int(t) for t in np.atleast_1d(tokens)}
        self._removed.update(int(t) for t in range(len(self._mass)) if t not in keep)

    def mass(self, token: int) -> float:
        return float(self._mass[token])

    @property
    def remaining(self) -> float:
        return float(sum(self._mass[t] for t in self._left()))

    def coin(self, probability: float) -> bool:
        if probability >= 1.0:
            return True
        if probability <= 0.0:
            return False
        return bool(self._choose([(True, probability), (False, 1.0 - probability)]))

    def poisson_sample(self, horizon: float) -> list[int]:
        """Independent coins per token (the law MassDrawer's race realises), so every branch
        can be enumerated."""
        arrived = [int(t) for t in self._left() if self.coin(inclusion_probability(self._mass[t], horizon))]
        self._removed.update(arrived)
        return arrived


@dataclass(frozen=True)
class Outcome:
    probability: float
    draw: Draw
    checks: int


def enumerate_estimator(
    estimator: Callable[..., Draw],
    mass: Sequence[float],
    accepted: Callable[[int], bool] | set[int],
    **kwargs,
) -> Iterator[Outcome]:
    """Every outcome of ``estimator(drawer, accept, **kwargs)`` with its exact probability."""
    accept_fn = accepted.__contains__ if isinstance(accepted, (set, frozenset)) else accepted
    pending: list[list[int]] = [[]]
    while pending:
        script = pending.pop()
        drawer = _ScriptedDrawer(np.asarray(mass), script)
        checked: set[int] = set()

        def accept(token: int) -> bool:
            checked.add(token)
            return bool(accept_fn(token))

        draw = estimator(drawer, accept, **kwargs)
        for position in range(len(script), len(drawer.trace)):
            for alternative in range(1, drawer.widths[position]):
                pending.append(drawer.trace[:position] + [alternative])
        yield Outcome(drawer.probability, draw, len(checked))


@dataclass(frozen=True)
class Moments:
    """Exact summaries of an estimator on one distribution."""

    token_probability: dict[int, float]  # P(x = a)
    weighted: dict[int, float]  # E[w 1{x = a}]
    mean_weight: float
    variance: float
    expected_checks: float


def estimator_moments(
    estimator: Callable[..., Draw], mass: Sequence[float], accepted: set[int], **kwargs
) -> Moments:
    """Exact P(x=a), E[w 1{x=a}], E[w], Var[w] and expected distinct checks of an estimator."""
    token_probability: dict[int, float] = {}
    weighted: dict[int, float] = {}
    first = second = checks = 0.0
    for outcome in enumerate_estimator(estimator, mass, accepted, **kwargs):
        w = math.exp(outcome.draw.log_weight)
        token = outcome.draw.token
        token_probability[token] = token_probability.get(token, 0.0) + outcome.probability
        weighted[token] = weighted.get(token, 0.0) + outcome.probability * w
        first += outcome.probability * w
        second += outcome.probability * w * w
        checks += outcome.probability * outcome.checks
    return Moments(token_probability, weighted, first, second - first * first, checks)


def exact_target(
    model: TableModel, prompt: Sequence[int], constraint: Constraint, max_tokens: int
) -> dict[bytes, float]:
    """``{text: p(text, EOS)}`` over every valid text of at most ``max_tokens`` tokens.

    The values sum to P(constraint and length <= max_tokens); normalised they are the exact
    target p(x | constraint). Special non-EOS tokens are never generated (as in sampling).
    """
    vocab = model.vocab
    out: dict[bytes, float] = {}

    def visit(context: tuple[int, ...], generated: tuple[int, ...], state, probability: float):
        probs = np.exp(model.logprobs_of(context))
        for token in np.flatnonzero(probs > 0):
            token = int(token)
            p = probability * probs[token]
            if token in vocab.eos_ids:
                if constraint.is_complete(state):
                    text = vocab.decode(generated)
                    out[text] = out.get(text, 0.0) + p
            elif token not in vocab.special_ids and len(generated) < max_tokens:
                after = constraint.advance(state, vocab.tokens[token])
                if after is not DEAD:
                    visit(context + (token,), generated + (token,), after, p)

    visit(tuple(prompt), (), constraint.start(), 1.0)
    return out


def exact_lcd(
    model: TableModel, prompt: Sequence[int], constraint: Constraint, max_tokens: int
) -> dict[bytes, float]:
    """``{text: q(text)}`` where q is locally constrained decoding (one token at a time).

    At ``max_tokens`` EOS is forced, as in sampling. Texts whose path dies have no entry, so
    the values sum to the probability that locally constrained decoding survives.
    """
    vocab = model.vocab
    out: dict[bytes, float] = {}

    def visit(context, generated, state, probability):
        probs = np.exp(model.logprobs_of(context))
        at_limit = len(generated) >= max_tokens
        options = []
        for token in np.flatnonzero(probs > 0):
            token = int(token)
            if token in vocab.eos_ids:
                if constraint.is_complete(state):
                    options.append((token, probs[token], None))
            elif token not in vocab.special_ids and not at_limit:
                after = constraint.advance(state, vocab.tokens[token])
                if after is not DEAD:
                    options.append((token, probs[token], after))
        total = sum(p for _, p, _ in options)
        for token, p, after in options:
            share = probability * p / total
            if after is None:
                text = vocab.decode(generated)
                out[text] = out.get(text, 0.0) + share
            else:
                visit(context + (token,), generated + (token,), after, share)

    visit(tuple(prompt), (), constraint.start(), 1.0)
    return out


def bytes_accepted(constraint: Constraint, text: str | bytes, chunk: int = 1) -> int:
    """Feed ``text`` to ``constraint`` ``chunk`` bytes at a time; how many bytes it accepted.

    A valid text must be accepted whole (``== len(data)``), through every prefix: the prefix
    half of the constraint contract, checked at every cut a tokenizer could make.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    state = constraint.start()
    for i in range(0, len(data), chunk):
        state = constraint.advance(state, data[i : i + chunk])
        if state is DEAD:
            return i
    return len(data)


def total_variation(p: dict, q: dict) -> float:
    """Total variation distance between two (normalised) distributions given as dicts."""
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in keys)


def normalize(weights: dict) -> dict:
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()} if total > 0 else {}
