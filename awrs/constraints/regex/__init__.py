"""Regular expressions: one constraint, two engines (see :mod:`.pattern`).

``pattern``: the :class:`Regex` constraint, its backtracking engine and the choice between
engines; ``dfa``: patterns compiled to DFAs over characters (also used for grammar terminals);
``char_sets`` and ``classes``: character sets and ``re``'s classes; ``automaton``: the DFA over
UTF-8 bytes and its checker's whole-vocabulary masks.
"""

from .pattern import Regex

__all__ = ["Regex"]
