"""Goal inference (paper notes §4.3): write a blocksworld PDDL goal from its English description.

The shared data has the domain (``blocksworld.pddl``) and the goal grammar
(``goal_inference.lark``) but no Planetarium problems. Instances come from
``problems.jsonl`` in the data folder when present (``{"id", "description", "problem"}``:
``problem`` is a full PDDL problem whose goal is the gold goal); otherwise 100 problems of
3-5 blocks are generated here, seeded (random initial and goal towers; the description lists
every goal fact in English). Metrics:

* ``parses``: the output is a sentence of the goal grammar, and the problem completed with it
  parses (``pddl`` package) against the domain with every object declared;
* ``score`` (equivalence): the set of blocksworld states satisfying the generated goal equals
  the set satisfying the gold goal, computed by enumerating every state of the problem's
  blocks (exact for these sizes; Planetarium's ``evaluate`` is not used: it is not on PyPI
  for this Python and needs its own data).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np

from ...constraints.grammar import Grammar
from ..base import Domain, Instance

SYSTEM = (
    "You are a PDDL expert, who writes valid PDDL code that describes user-provided planning "
    "problems directly without further explanations or texts."
)
GOAL_MARK = "(:goal (and"
ATOM = re.compile(r"\((on-table|on|clear|holding|arm-empty)((?:\s+[\w-]+)*)\s*\)")
PROBLEMS = 100


def read_grammar(data_dir: Path) -> str:
    """The shipped goal grammar, with the end of the goal (2-4 closing parentheses) made explicit."""
    text = (Path(data_dir) / "goal_inference.lark").read_text(encoding="utf-8")
    rules = [line for line in text.splitlines() if not line.startswith("start:")]
    return 'start: " " (pred " ")* final_pred CLOSE\nCLOSE: /\\){2,4}/\n' + "\n".join(rules) + "\n"


def goal_atoms(goal_text: str) -> frozenset[tuple]:
    return frozenset((m.group(1), *m.group(2).split()) for m in ATOM.finditer(goal_text))


def states(blocks: list[str]):
    """Every blocksworld state over ``blocks``, as a frozenset of true ground atoms."""
    n = len(blocks)
    choices = ["table", "held"] + list(range(n))
    for parents in itertools.product(choices, repeat=n):
        if sum(p == "held" for p in parents) > 1:
            continue
        ok = True
        below_count = [0] * n
        for i, p in enumerate(parents):
            if isinstance(p, int):
                if p == i or parents[p] == "held":
                    ok = False
                    break
                below_count[p] += 1
        if not ok or any(c > 1 for c in below_count):
            continue
        if any(_cycle(parents, i) for i in range(n)):
            continue
        atoms = set()
        for i, p in enumerate(parents):
            if p == "table":
                atoms.add(("on-table", blocks[i]))
            elif p == "held":
                atoms.add(("holding", blocks[i]))
            else:
                atoms.add(("on", blocks[i], blocks[p]))
            if below_count[i] == 0 and p != "held":
                atoms.add(("clear", blocks[i]))
        if "held" not in parents:
            atoms.add(("arm-empty",))
        yield frozenset(atoms)


def _cycle(parents, i) -> bool:
    seen = set()
    while isinstance(parents[i], int):
        if i in seen:
            return True
        seen.add(i)
        i = parents[i]
    return False


def satisfying(goal: frozenset, blocks: list[str], all_states) -> frozenset:
    return frozenset(k for k, s in enumerate(all_states) if goal <= s)


def _towers(rng, blocks):
    order = list(rng.permutation(blocks))
    towers, current = [], []
    for b in order:
        current.append(b)
        if rng.random() < 0.4:
            towers.append(current)
            current = []
    if current:
        towers.append(current)
    return towers  # bottom to top


def _facts(towers) -> list[tuple]:
    facts = []
    for tower in towers:
        facts.append(("on-table", tower[0]))
        facts += [("on", tower[k + 1], tower[k]) for k in range(len(tower) - 1)]
        facts.append(("clear", tower[-1]))
    facts.append(("arm-empty",))
    return facts


def _english(fact) -> str:
    kind, *args = fact
    return {"on-table": "{} is on the table", "on": "{} is on top of {}", "clear": "{} is clear",
            "arm-empty": "the arm is empty", "holding": "the arm is holding {}"}[kind].format(*args)


def _pddl(fact) -> str:
    return "(" + " ".join(fact) + ")"


def synthetic_problems(seed: int, count: int = PROBLEMS):
    rng = np.random.default_rng(seed)
    for k in range(count):
        blocks = [f"b{i}" for i in range(1, int(rng.integers(3, 6)) + 1)]
        init, goal = _facts(_towers(rng, blocks)), _facts(_towers(rng, blocks))
        description = "Your goal is to reach a state where " + ", ".join(_english(f) for f in goal) + "."
        problem = (
            f"(define (problem blocksworld-{k})\n(:domain blocksworld)\n(:objects {' '.join(blocks)})\n"
            f"(:init {' '.join(_pddl(f) for f in init)})\n{GOAL_MARK} {' '.join(_pddl(f) for f in goal)}))\n)"
        )
        yield {"id": f"synthetic-{k}", "description": description, "problem": problem}


class GoalInference(Domain):
    name = "goal_inference"
    folder = "goal_inference"
    max_tokens = 100
    primary = "goal equivalence"

    def __init__(self) -> None:
        self._constraint = None
        self._states: dict[tuple, list] = {}

    def instances(self, data_dir: Path, *, seed: int):
        data_dir = Path(data_dir)
        self.grammar_text = read_grammar(data_dir)
        self.domain_text = (data_dir / "blocksworld.pddl").read_text(encoding="utf-8")
        path = data_dir / "problems.jsonl"
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows = list(synthetic_problems(seed))
        for k, row in enumerate(rows):
            ident = str(row.get("id", f"problem-{k}"))
            problem, description = row.get("problem"), row.get("description")
            if not problem or not description or GOAL_MARK not in problem:
                yield Instance(ident, skip=f"malformed problem (needs description and {GOAL_MARK!r})")
                continue
            head, _, goal = problem.partition(GOAL_MARK)
            objects = re.search(r"\(:objects([^)]*)\)", head)
            blocks = objects.group(1).split() if objects else []
            prompt = f"{SYSTEM}\n\n{description}\n\n{head}{GOAL_MARK}"
            yield Instance(ident, prompt=prompt, chat=False,
                           data={"head": head, "gold": sorted(goal_atoms(goal)), "blocks": blocks})

    def constraint(self, instance: Instance):
        if self._constraint is None:
            self._constraint = Grammar(self.grammar_text)
        return self._constraint

    def _all_states(self, blocks) -> list:
        key = tuple(blocks)
        if key not in self._states:
            self._states[key] = list(states(list(blocks)))
        return self._states[key]

    def score(self, instance: Instance, text: str) -> dict:
        body = text.rstrip().rstrip(")")
        goal_text = body + ")" if body else ""
        parses = bool(body) and self.constraint(instance).accepts(text.rstrip())
        if parses:
            parses = self._pddl_parses(instance, goal_text)
        blocks = instance.data["blocks"]
        if not parses or len(blocks) > 6:
            return {"score": 0.0, "valid": parses, "parses": float(parses)}
        everything = self._all_states(blocks)
        gold = frozenset(tuple(a) for a in instance.data["gold"])
        same = satisfying(goal_atoms(goal_text), blocks, everything) == satisfying(gold, blocks, everything)
        return {"score": float(same), "valid": True, "parses": 1.0}

    def _pddl_parses(self, instance: Instance, goal_text: str) -> bool:
        """The completed problem parses, and its goal uses declared objects and domain predicates."""
        try:
            from pddl.parser.domain import DomainParser
            from pddl.parser.problem import ProblemParser
        except ImportError:  # without the pddl package: only the objects are checked
            used = {a for atom in goal_atoms(goal_text) for a in atom[1:]}
            return used <= set(instance.data["blocks"])
        try:
            if not hasattr(self, "_arity"):
                domain = DomainParser()(self.domain_text)
                self._arity = {p.name: p.arity for p in domain.predicates}
            problem = ProblemParser()(f"{instance.data['head']}{GOAL_MARK}{goal_text}))\n)")
        except Exception:  # noqa: BLE001 - any parse failure means "does not parse"
            return False
        declared = {o.name for o in problem.objects}
        for name, *args in goal_atoms(goal_text):
            if self._arity.get(name) != len(args) or not set(args) <= declared:
                return False
        return True


DOMAIN = GoalInference
