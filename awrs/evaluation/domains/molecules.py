"""Molecular synthesis (paper notes §4.4): a SMILES molecule like 20 random GDB-17 examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...constraints.base import DEAD, Constraint
from ...constraints.smiles import Smiles
from ..base import Domain, Instance

HEADER = (
    "You are an expert in chemistry. You are given a list of molecules in SMILES format.\n"
    "You are asked to write another molecule in SMILES format with similar chemical properties.\n"
)
PROMPTS = 100  # number of prompts (instances), as in the paper
SHOTS = 20  # molecules per prompt


def prompt(molecules: list[str]) -> str:
    return HEADER + "".join(f"Molecule: {m}\n" for m in molecules) + "Molecule:"


class LeadingSpace(Constraint):
    """``inner``'s texts, optionally preceded by one space (the prompt ends with "Molecule:").

    States are ``(seen_first_byte, inner_state)``.
    """

    def __init__(self, inner: Constraint) -> None:
        self.inner = inner

    def describe(self) -> str:
        return self.inner.describe()

    def start(self):
        return (False, self.inner.start())

    def advance(self, state, data: bytes):
        seen, inner = state
        if not data:
            return state
        if not seen and data[:1] == b" ":
            data = data[1:]
        nxt = self.inner.advance(inner, data) if data else inner
        return DEAD if nxt is DEAD else (True, nxt)

    def is_complete(self, state) -> bool:
        return self.inner.is_complete(state[1])

    def min_completion_bytes(self, state) -> int:
        return self.inner.min_completion_bytes(state[1])


class Molecules(Domain):
    name = "molecules"
    folder = "molecules"
    max_tokens = 40
    stops = ("\n",)  # paper: tokens containing a newline end the text
    primary = "QED"

    def __init__(self) -> None:
        self._qed_cache: dict[str, float | None] = {}

    def instances(self, data_dir: Path, *, seed: int):
        path = Path(data_dir) / "GDB17_sample.txt"
        pool = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not pool:
            raise OSError(f"{path} has no molecules")
        rng = np.random.default_rng(seed)
        for k in range(PROMPTS):
            shots = [pool[i] for i in rng.choice(len(pool), size=min(SHOTS, len(pool)), replace=False)]
            yield Instance(f"prompt-{k}", prompt=prompt(shots), chat=False, data={"shots": shots})

    def constraint(self, instance: Instance):
        return LeadingSpace(Smiles())

    def qed(self, text: str) -> float | None:
        """RDKit QED of the molecule, or None if RDKit cannot parse it."""
        text = text.strip()
        if text not in self._qed_cache:
            from rdkit import Chem, RDLogger
            from rdkit.Chem import QED

            RDLogger.DisableLog("rdApp.*")
            mol = Chem.MolFromSmiles(text) if text else None
            self._qed_cache[text] = float(QED.qed(mol)) if mol is not None else None
        return self._qed_cache[text]

    def score(self, instance: Instance, text: str) -> dict:
        value = self.qed(text)
        return {"score": value or 0.0, "valid": value is not None}

    def aggregate(self, instance: Instance, outputs: list[dict]) -> dict:
        """Diversity: distinct valid molecules (canonical SMILES) / number of outputs."""
        if not outputs:
            return {"diversity": 0.0}
        from rdkit import Chem

        unique = set()
        for out in outputs:
            if out["valid"]:
                mol = Chem.MolFromSmiles(out["text"].strip())
                unique.add(Chem.MolToSmiles(mol) if mol is not None else out["text"])
        return {"diversity": len(unique) / len(outputs)}


DOMAIN = Molecules
