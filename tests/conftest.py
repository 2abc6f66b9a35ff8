"""Shared tiny exact models for the tests."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from awrs.models import TableModel


def lcd_trap_model() -> TableModel:
    """Locally constrained decoding's classic failure, for the constraint ``ab|c``.

    The model prefers 'a' (0.9) but after 'a' almost never says 'b' (0.01). So p(ab) = 0.009,
    p(c) = 0.1 and the exact conditional is p(c | constraint) = 0.1 / 0.109 = 0.917, while LCD
    commits to 'a' first and outputs 'ab' 90% of the time.
    """
    table = {
        (): [0.9, 0.0, 0.1, 0.0],
        (0,): [0.0, 0.01, 0.99, 0.0],
    }
    return TableModel.from_table(["a", "b", "c", "<eos>"], table, eos=3, default=[0.0, 0.0, 0.0, 1.0])


def hashed_model(tokens=("a", "b", "c", "<eos>"), eos=3, concentration=1.0, seed=0) -> TableModel:
    """A model whose next-token distribution is a fixed pseudo-random function of the context."""

    def next_probs(context):
        key = zlib.crc32(repr((seed, context)).encode())
        return np.random.default_rng(key).dirichlet(np.full(len(tokens), concentration))

    return TableModel(list(tokens), next_probs, eos=eos, name="hashed")


def llamacpp_unusable() -> str | None:
    """Why the llama.cpp backend cannot run here (imported the way the backend does), or None."""
    from awrs.errors import ModelError
    from awrs.models.llamacpp_lib import llama

    try:
        llama()
    except ModelError as err:
        return str(err)
    return None


@pytest.fixture
def trap_model() -> TableModel:
    return lcd_trap_model()


def feed_in_pieces(constraint, data: bytes, cuts):
    """The states after each piece of ``data`` cut at ``cuts`` (as tokens would cut it, inside
    multi-byte characters too), stopping at the first dead one."""
    from awrs.constraints.base import DEAD

    state, at, states = constraint.start(), 0, []
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut <= at:
            continue
        state = constraint.advance(state, data[at:cut])
        states.append(state)
        at = cut
        if state is DEAD:
            break
    return states


def named_model_on(name: str, backend: str):
    """A named model on ``backend`` (``llamacpp`` or ``hf``), or a skip saying what is missing:
    the module fixtures of the named-model test files."""
    import awrs

    if backend == "llamacpp":
        unusable = llamacpp_unusable()
        if unusable is not None:
            pytest.skip(f"llama-cpp-python is not usable: {unusable}")
    else:
        pytest.importorskip("transformers")
    return awrs.load_model(name, backend=backend, verbose=False)


def options_given_to_load_model(monkeypatch, argvs) -> list[dict]:
    """The keyword options each command line passes to ``awrs.models.load_model`` (which is
    stubbed: no model loads)."""
    from awrs.cli import main

    seen = []

    class Loaded(Exception):
        pass

    def fake_load_model(path=None, **options):
        seen.append(options)
        raise Loaded

    monkeypatch.setattr("awrs.models.load_model", fake_load_model)
    for argv in argvs:
        with pytest.raises(Loaded):
            main(argv)
    return seen
