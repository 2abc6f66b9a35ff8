"""Smiles: texts that are valid molecules (RDKit), checked on every prefix (partialsmiles).

Valid means what RDKit says: ``Chem.MolFromSmiles(text)`` parses and sanitizes it (valences,
aromaticity, kekulization), the text is not empty and has no whitespace (RDKit would read what
follows whitespace as a name) and no ``~`` (RDKit's SMILES parser takes SMARTS's any-bond,
``C~C``, and makes a query bond with no bond order: not a molecule's bond).

Prefixes are checked with `partialsmiles`, a SMILES parser that reads unfinished SMILES. Used
as it comes it breaks the contract: it rejects prefixes of molecules RDKit accepts. So only
part of its verdict is used, on a normalised text:

* its syntax errors are used (unmatched ``)``, a bond or ring-closure digit with no atom
  before it, two bond symbols, an empty branch or molecule, ``(`` after a bond), except its
  stylistic rules -- ring closures after a branch ``C(C)1CC1``, ring bonds across a dot
  ``C1.C1``, aromatic bond symbols ``C:C``, a final branch in parentheses, open branches at
  a dot -- and inconsistent ring-bond orders ``C=1CC-1``, all of which RDKit reads;
* its valence errors are not used: its table rejects metals (``[Cu]``), radicals
  (``[CH2]``) and charge states RDKit accepts. Valence is checked with RDKit instead, on the
  prefix without its unfinished parts (open ring bonds, a trailing bond symbol, bracket or
  dot; open branches closed): bonds are only ever added, so an over-valent B, C, O or F atom
  stays invalid whatever follows. (Other elements are left alone: RDKit's clean-up turns
  nitro groups, halogen oxides and bonds to metals into forms with other valences.)
* its kekulization errors are not used (RDKit kekulizes some systems it cannot);
* bracket atoms are checked by RDKit's own parser one by one, and replaced by ``[*]`` for
  partialsmiles (it refuses atom classes, isotope 0, ``@OH``-style chirality, two-digit
  charges); an unfinished bracket atom (``[T`` on the way to ``[Ti]``) must match a pattern
  of bracket-atom prefixes; ``%(nnn)`` ring labels are renamed to ones it reads.

On 6,148 RDKit-valid molecules (the GDB-17 sample, the NCI and ChEMBL sets shipped with
RDKit) and ~90,000 RDKit-valid random mutations of them, no prefix is rejected; about 70 % of
invalid single-character corruptions are rejected before their end, the rest at completion.

A prefix check re-parses the text (partialsmiles has no incremental state), about 0.1 ms for
a drug-sized molecule; results are cached per text.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict

from ..errors import ConfigError
from .base import DEAD, Constraint, State

CACHE_SIZE = 65536

# partialsmiles rule switches (SmilesParser.rulesToIgnore) that reject what RDKit accepts:
# 4 final branch in parentheses, 8 open branch at a dot, 16 ring bond across a dot,
# 32 ring closure not right after its atom, 64 aromatic bond symbol ':'.
IGNORED_RULES = 4 | 8 | 16 | 32 | 64

# Characters RDKit's SMILES parser can use in a molecule (no whitespace, no reaction '>', no
# SMARTS any-bond '~', which it also reads: see the module docstring).
_ALPHABET = frozenset("BCNOPSFIHKLMRTVWYZXGDEAUbcnopsfihklmrtvwyzxgdeau[]()=#$:/\\.%+-@*0123456789")

# A superset of the bracket atoms RDKit reads, for an unfinished one at the end of a prefix.
_BRACKET_ATOM = r"\[[0-9]*(?:[A-Za-z]{1,3}|\*)(?:@[A-Za-z0-9@]*)?(?:H[0-9]*)?(?:[+-]+[0-9]*)?(?::[0-9]*)?\]"
_BRACKETS = re.compile(r"\[[^\]]*\]")
_BACKSLASHES = re.compile(r"\\+")
_LONG_RING = re.compile(r"%\((\d*)(\)?)")
# partialsmiles syntax errors that RDKit does not make: it reads C=1CC-1 (one of the orders).
_UNTRUSTED_SYNTAX = frozenset({"Inconsistent bond orders"})
_TOKENS = re.compile(r"\[[^\]]*\]|Br|Cl|%\d\d|[A-Za-z*]|\d|[-=#$:/\\.()]|.", re.DOTALL)


def _libs():
    try:
        import partialsmiles
        from partialsmiles import smiparser
        from rdkit import Chem, RDLogger
    except ImportError as err:  # pragma: no cover
        raise ConfigError(
            "Smiles needs the packages 'partialsmiles' and 'rdkit' (pip install partialsmiles rdkit)"
        ) from err
    RDLogger.DisableLog("rdApp.*")
    return partialsmiles, smiparser, Chem


class Smiles(Constraint):
    """Valid molecules as SMILES (RDKit sanitization), with prefix checks (partialsmiles)."""

    def __init__(self) -> None:
        import regex

        self._ps, smiparser, self._chem = _libs()

        class _Parser(smiparser.SmilesParser):
            def validateValence(self, state):
                return None  # valence is checked with RDKit (see module docstring)

        self._parser_class = _Parser
        self._bracket = regex.compile(_BRACKET_ATOM)
        self._lock = threading.Lock()
        self._prefix_cache: OrderedDict[str, bool] = OrderedDict()
        self._complete_cache: OrderedDict[str, bool] = OrderedDict()
        self._bracket_cache: dict[str, bool] = {}

    def describe(self) -> str:
        return "SMILES molecule"

    def __repr__(self) -> str:
        return "Smiles()"

    def start(self) -> str:
        return ""

    def advance(self, state: State, data: bytes) -> State:
        if not data:
            return state
        try:
            added = data.decode("ascii")
        except UnicodeDecodeError:
            return DEAD  # SMILES are ASCII: a non-ASCII byte can never be part of one
        text = state + added
        return text if self.prefix_ok(text) else DEAD

    def is_complete(self, state: State) -> bool:
        return self.complete_ok(state)

    def next_bytes(self, state: State) -> frozenset[int] | None:
        return frozenset(map(ord, _ALPHABET))

    def min_completion_bytes(self, state: State) -> int:
        """A byte for each open branch and ring bond and for an open bracket atom; one for an
        atom after a trailing bond symbol or dot (unless a ring bond's closing digit can be it);
        one for the empty text."""
        return unclosed_smiles(state)

    # --- checks ---------------------------------------------------------------------------

    def _cached(self, cache: OrderedDict, text: str, check) -> bool:
        with self._lock:
            known = cache.get(text)
            if known is not None:
                cache.move_to_end(text)
                return known
        result = check(text)
        with self._lock:
            cache[text] = result
            while len(cache) > CACHE_SIZE:
                cache.popitem(last=False)
        return result

    def complete_ok(self, text: str) -> bool:
        """Whether ``text`` is a molecule RDKit parses and sanitizes."""
        return self._cached(self._complete_cache, text, self._complete)

    def prefix_ok(self, text: str) -> bool:
        """False only when no continuation of ``text`` can be a valid molecule."""
        return self._cached(self._prefix_cache, text, self._prefix)

    def _complete(self, text: str) -> bool:
        if not text or not set(text) <= _ALPHABET:
            return False
        try:
            return self._chem.MolFromSmiles(text) is not None
        except Exception:  # noqa: BLE001 - RDKit raises assorted C++ errors on odd input
            return False

    def _prefix(self, text: str) -> bool:
        if not set(text) <= _ALPHABET:
            return False
        head, tail = _split_open_bracket(text)
        if tail and not self._bracket.fullmatch(tail, partial=True):
            return False
        if "[" in head:
            for atom in set(_BRACKETS.findall(head)):
                if not self._bracket_ok(atom):
                    return False
            structure = _BRACKETS.sub("[*]", head)
        else:
            structure = head
        structure = _BACKSLASHES.sub("\\\\", structure)
        if "%(" in structure:
            structure = _long_ring_labels(structure)
            if structure is None:
                return self._valence_ok(head)
        if structure:
            try:
                self._parser_class(True, IGNORED_RULES).parse(structure)
            except self._ps.SMILESSyntaxError as err:
                if not (err.args and err.args[0] in _UNTRUSTED_SYNTAX):
                    return False
            except Exception:  # noqa: BLE001, S110 - kekulization (RDKit is more lenient), parser bugs
                pass
        return self._valence_ok(head)

    def _bracket_ok(self, atom: str) -> bool:
        """Whether RDKit reads one bracket atom (without sanitizing: its context may fix that)."""
        with self._lock:
            known = self._bracket_cache.get(atom)
        if known is None:
            try:
                known = self._chem.MolFromSmiles(atom, sanitize=False) is not None
            except Exception:  # noqa: BLE001
                known = True
            with self._lock:
                if len(self._bracket_cache) > CACHE_SIZE:
                    self._bracket_cache.clear()
                self._bracket_cache[atom] = known
        return known

    def _valence_ok(self, head: str) -> bool:
        """RDKit's explicit-valence check on the finished part of a prefix.

        Only over-valent B, C, O and F atoms with no metal neighbour count: RDKit's clean-up
        step rewrites nitro groups, halogen oxides and P/N ylides into charge-separated forms
        and bonds to metals into dative bonds, so for other atoms a valence that is too high
        in a prefix can still be valid once the rest of the molecule is there.
        """
        reduced = reduce_prefix(head)
        if not reduced:
            return True
        try:
            mol = self._chem.MolFromSmiles(reduced, sanitize=False)
            if mol is None:
                return True  # the reduction is not parseable: no verdict
            problems = self._chem.DetectChemistryProblems(mol, sanitizeOps=self._chem.SANITIZE_PROPERTIES)
        except Exception:  # noqa: BLE001 - no verdict
            return True
        for problem in problems:
            if problem.GetType() != "AtomValenceException":
                continue
            atom = mol.GetAtomWithIdx(problem.GetAtomIdx())
            if atom.GetAtomicNum() in _STRICT_ELEMENTS and all(
                n.GetAtomicNum() in _ORGANIC for n in atom.GetNeighbors()
            ):
                return False
        return True


_STRICT_ELEMENTS = frozenset({5, 6, 8, 9})  # B C O F
_ORGANIC = frozenset({0, 1, 5, 6, 7, 8, 9, 14, 15, 16, 17, 34, 35, 53})


def _long_ring_labels(text: str) -> str | None:
    """Rename RDKit's ring labels %(n) to two-digit ones partialsmiles reads (None: too many)."""
    labels: dict[str, str] = {}
    used = set(re.findall(r"%(\d\d)", text))
    free = [f"{n:02d}" for n in range(99, 9, -1) if f"{n:02d}" not in used]

    def rename(match: re.Match) -> str:
        number, closed = match.group(1), match.group(2)
        if not closed:
            return "%"  # unfinished label at the end: an unfinished two-digit label reads the same
        if number not in labels:
            if not free:
                raise OverflowError
            labels[number] = free.pop()
        return "%" + labels[number]

    try:
        return _LONG_RING.sub(rename, text)
    except OverflowError:
        return None


def _split_open_bracket(text: str) -> tuple[str, str]:
    """Split off an unfinished bracket atom at the end of ``text`` ('CC[Ti' -> 'CC', '[Ti')."""
    i = text.rfind("[")
    if i >= 0 and "]" not in text[i:]:
        return text[:i], text[i:]
    return text, ""


def reduce_prefix(head: str) -> str:
    """The finished part of a SMILES prefix: a SMILES whose every bond is in every completion.

    Removes ring-bond openings that are not closed yet (with their bond symbol), a trailing
    bond symbol or dot, empty trailing branches, and closes open branches.
    """
    tokens = _TOKENS.findall(head)
    open_rings: dict[str, int] = {}
    for i, tok in enumerate(tokens):
        if tok[0].isdigit() or tok[0] == "%":
            if tok in open_rings:
                del open_rings[tok]
            else:
                open_rings[tok] = i
    drop = set()
    for i in open_rings.values():
        drop.add(i)
        if i > 0 and tokens[i - 1] in ("-", "=", "#", "$", ":", "/", "\\"):
            drop.add(i - 1)
    kept = [t for i, t in enumerate(tokens) if i not in drop]
    # trailing bond symbols, dots and open parentheses carry no finished bond
    while kept and kept[-1] in ("-", "=", "#", "$", ":", "/", "\\", ".", "("):
        kept.pop()
    depth = 0
    for tok in kept:
        if tok == "(":
            depth += 1
        elif tok == ")":
            depth -= 1
    if depth < 0:
        return ""
    out = "".join(kept) + ")" * depth
    while "()" in out:
        out = out.replace("()", "")
    return out


_BOND_OR_DOT = frozenset("-=#$:/\\.")


def unclosed_smiles(text: str) -> int:
    """The lower bound of :meth:`Smiles.min_completion_bytes` for ``text``."""
    if not text:
        return 1
    branches, rings, i, n = 0, set(), 0, len(text)
    while i < n:
        char = text[i]
        if char == "[":
            end = text.find("]", i)
            if end < 0:
                return branches + len(rings) + 1
            i = end
        elif char == "(":
            branches += 1
        elif char == ")":
            branches = max(branches - 1, 0)
        elif char.isdigit():
            rings ^= {char}
        elif char == "%":
            if text[i + 1:i + 2] == "(":
                end = text.find(")", i)
                if end < 0:  # an unfinished label: its last byte may close an open ring
                    return branches + max(len(rings), 1)
                label, i = text[i + 2:end], end
            else:
                label = text[i + 1:i + 3]
                if len(label) < 2:
                    return branches + max(len(rings), 1)
                i += 2
            rings ^= {"%" + label}
        i += 1
    trailing = text[-1] in _BOND_OR_DOT and not rings
    return branches + len(rings) + trailing
