"""Smiles: RDKit-valid molecules, with prefix checks that never reject a prefix of a valid one.

* every prefix of every molecule of the GDB-17 sample and of RDKit's NCI set is accepted and
  the molecules are complete; corrupted molecules are rejected (most of them early);
* cases where partialsmiles alone would reject a prefix RDKit completes: metals, radicals,
  atom classes, isotope 0, unfinished bracket atoms, ring closures after branches, ring bonds
  across dots, inconsistent ring-bond orders, perchlorates, %(nnn) ring labels;
* hypothesis: mutated molecules that RDKit accepts keep all prefixes; rejected prefixes have
  no accepted extension; arbitrary bytes never raise.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("partialsmiles")
Chem = pytest.importorskip("rdkit.Chem")

from rdkit import RDConfig, RDLogger

from awrs.constraints.base import DEAD
from awrs.constraints.smiles import Smiles, reduce_prefix
from awrs.testing import bytes_accepted

RDLogger.DisableLog("rdApp.*")

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "grammar"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HYPOTHESIS = settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def smiles() -> Smiles:
    return Smiles()




def nci_molecules(n: int) -> list[str]:
    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    return [line.split()[0] for line in lines[:n] if line.strip()]


def gdb17() -> list[str]:
    shared = SHARED / "molecules" / "GDB17_sample.txt"
    path = shared if shared.is_file() else FIXTURES / "GDB17_sample.txt"
    return path.read_text().split()


def test_gdb17_sample_all_prefixes_and_complete(smiles):
    molecules = gdb17()
    assert len(molecules) == 30
    for molecule in molecules:
        assert bytes_accepted(smiles, molecule) == len(molecule), molecule
        assert smiles.accepts(molecule)


def test_nci_molecules_all_prefixes(smiles):
    molecules = [m for m in nci_molecules(400) if Chem.MolFromSmiles(m) is not None]
    if not molecules:
        pytest.skip("RDKit's NCI sample is not installed")
    for molecule in molecules:
        assert bytes_accepted(smiles, molecule) == len(molecule), molecule
        assert smiles.accepts(molecule)


@pytest.mark.parametrize(
    "molecule",
    [
        "CC(C)(C)",  # final branch in parentheses
        "C(C)1CC1",  # ring closure after a branch
        "C1.C1",  # ring bond across a dot
        "C:C",  # aromatic bond symbol
        "C=1CCC#1",  # inconsistent ring-bond orders: RDKit takes one
        "[CH3:1]C",  # atom class
        "[0CH4]",  # isotope 0
        "CC[Ti](C)(C)C",  # metal valence
        "[CH2]CC",  # radical
        "OCl(=O)(=O)=O",  # perchloric acid (RDKit's clean-up makes it charge-separated)
        "C[N](=O)=O",  # nitro as written with a neutral five-valent N
        "C%(123)CC%(123)",  # long ring label
        "C[C@@H](N)C(=O)O",
        "c1ccc2ccccc2c1",
        "[Na+].[Cl-]",
        "C\\C=C/C",
    ],
)
def test_prefixes_of_molecules_partialsmiles_would_reject(smiles, molecule):
    assert Chem.MolFromSmiles(molecule) is not None
    assert bytes_accepted(smiles, molecule) == len(molecule)
    assert smiles.accepts(molecule)


@pytest.mark.parametrize(
    "text, prefix_alive",
    [
        ("C)", False),
        ("CC(C)(C)(C)(C)C", False),  # five-valent carbon, already over the limit
        ("C==C", False),
        ("C C", False),  # whitespace: RDKit would read what follows as a name
        ("CC>C", False),  # reactions are not molecules
        ("C~C", False),  # RDKit reads SMARTS's any-bond into a bond with no order: not a molecule
        ("c~1ccccc1", False),  # also across a ring bond, which RDKit reads too
        ("Cé", False),
        ("C1CC", True),  # open ring: a prefix, not a molecule
        ("C(", True),
        ("[T", True),  # on the way to [Ti]
        ("[Xx]", False),  # no such element
        ("n1cccc1", True),  # not kekulizable: left to RDKit at the end (prefix checks stay lenient)
        ("", True),
    ],
)
def test_invalid_texts(smiles, text, prefix_alive):
    assert not smiles.accepts(text)
    assert smiles.accepts_prefix(text) == prefix_alive


def test_reduce_prefix_keeps_only_finished_bonds():
    assert reduce_prefix("C1CC(=") == "CCC"
    assert reduce_prefix("CC(C") == "CC(C)"
    assert reduce_prefix("C=1CC1C(") == "C=1CC1C"
    assert reduce_prefix("C.") == "C"


def test_corruptions_are_rejected(smiles):
    rng = random.Random(0)
    molecules = gdb17() + nci_molecules(150)
    rejected = early = total = 0
    for molecule in molecules:
        i = rng.randrange(len(molecule))
        bad = molecule[:i] + rng.choice("C()=#1[]+N") + molecule[i + 1 :]
        if Chem.MolFromSmiles(bad) is not None:
            continue
        total += 1
        rejected += not smiles.accepts(bad)
        early += not smiles.accepts_prefix(bad)
    assert total > 50 and rejected == total
    assert early >= total * 0.5


PIECES = [
    "C",
    "N",
    "O",
    "c",
    "n",
    "(",
    ")",
    "=",
    "#",
    "1",
    "2",
    "%10",
    "[NH+]",
    "[O-]",
    "[C@@H]",
    "/",
    "\\",
    ".",
    "Cl",
    "Br",
    "[Na+]",
    "[2H]",
    "[CH2]",
    "[Fe]",
    "S",
    "P",
    "[nH]",
    "[CH3:1]",
    ":",
]


@HYPOTHESIS
@given(
    st.integers(0, 10**6),
    st.lists(
        st.tuples(st.sampled_from(PIECES), st.integers(0, 10**4), st.booleans()), min_size=1, max_size=3
    ),
)
def test_mutated_molecules_rdkit_accepts_keep_every_prefix(smiles, which, edits):
    molecules = gdb17() + nci_molecules(200)
    text = molecules[which % len(molecules)]
    for piece, where, replace in edits:
        i = where % (len(text) + 1)
        text = text[:i] + piece + text[i + int(replace) :]
    if Chem.MolFromSmiles(text) is None:
        return
    assert bytes_accepted(smiles, text) == len(text), text
    assert smiles.accepts(text)


@HYPOTHESIS
@given(st.text(alphabet="CNOc1()=#[]+H.", max_size=12), st.text(alphabet="CNO1()=]", max_size=6))
def test_rejected_prefix_has_no_accepted_extension(smiles, prefix, suffix):
    if not smiles.accepts_prefix(prefix):
        assert not smiles.accepts(prefix + suffix)
        assert not smiles.accepts_prefix(prefix + suffix)
    if smiles.accepts(prefix):
        assert all(smiles.accepts_prefix(prefix[:i]) for i in range(len(prefix)))


@HYPOTHESIS
@given(st.binary(max_size=30))
def test_arbitrary_bytes_never_raise(smiles, data):
    state = smiles.start()
    for i in range(0, len(data), 2):
        state = smiles.advance(state, data[i : i + 2])
        if state is DEAD:
            return
    smiles.is_complete(state)
