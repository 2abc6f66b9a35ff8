"""How variable is each AWRS weight on real next-token distributions?

Collects real next-token distributions of the embedded model with their exact accepted sets
(every candidate token checked) along locally constrained runs on five tasks -- regex, JSON
Schema, SQL grammar, SMILES and a Python predicate -- then prints, per estimator, the
relative variance Var(w)/Z^2 of one call and its expected checks: median, 95th percentile and
max over the distributions.

The variance is exact given loop 1 (analytic formulas below) and averaged over loop 1 by Monte
Carlo (``--loop1`` Gumbel races per distribution). Since E[w | loop 1] = Z for the remainder and
Poisson estimators, Var(w) = E[Var(w | loop 1)]; for the two-loop estimator
Var(w) = E[E[w^2 | loop 1]] - Z^2, its loop-2 count law integrated by quadrature.

    .venv/bin/python bench/variance.py [--distributions 300] [--backend llamacpp] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import awrs
from awrs.constraints import Predicate, Regex
from awrs.sampling.awrs import DEFAULT_POISSON_VARIANCE, DEFAULT_ROULETTE, poisson_horizon
from awrs.sampling.samplers import AWRS, TokenSampler

FIXTURES = ROOT / "tests" / "fixtures"


def tasks():
    import json

    from awrs.constraints.grammar.grammar import Grammar
    from awrs.constraints.json_schema.schema import JsonSchema
    from awrs.constraints.smiles import Smiles

    schema = json.loads((FIXTURES / "json" / "bench_sample.jsonl").read_text().splitlines()[0])["schema"]
    molecules = (FIXTURES / "grammar" / "GDB17_sample.txt").read_text().split()[:5]
    return [
        ("regex", "My favourite animal is the", Regex(r" (cat xylophone|dog|horse)\."), False),
        ("regex", "Is the sky green? Answer:", Regex(r" (yes|no), because [a-z ,]{3,40}\."), False),
        ("json", "Write a JSON object for a volume request: ", JsonSchema(schema), False),
        ("sql", "Write an SQL query that counts the singers older than 30.",
         Grammar((FIXTURES / "grammar" / "concert_singer.lark").read_text()), True),
        ("smiles", "Molecules:\n" + "\n".join(molecules) + "\n", Smiles(), False),
        ("predicate", "Write a sentence without the letter e:",
         Predicate(lambda t: "e" not in t.lower() and len(t) <= 120,
                   lambda t: "e" not in t.lower() and t.endswith(".") and len(t) > 8, name="lipogram"), False),
    ]


class Recorder(TokenSampler):
    """LCD that also records each step's masses and exact accepted set."""

    name = "recorder"
    weighted = False

    def __init__(self, out: list, limit: int) -> None:
        self.out, self.limit, self.inner = out, limit, AWRS("lcd", masks="never")

    def propose(self, mass, blocks, accept, rng):
        if len(self.out) < self.limit:
            candidates = accept.candidates()
            ids = np.flatnonzero(mass > 0) if candidates is None else np.unique(candidates)
            ids = ids[mass[ids] > 0]
            valid = np.fromiter((accept(int(t)) for t in ids), dtype=bool, count=len(ids))
            accepted = ids[valid]
            if len(accepted) and mass[accepted].sum() > 0:
                self.out.append((mass.copy(), accepted))
        return self.inner.propose(mass, blocks, accept, rng)


def collect(model, per_task: int, seed: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from awrs.smc import Job, SMCConfig, run_smc_many

    rows = []
    for name, prompt, constraint, chat in tasks():
        found: list = []
        job = Job(model.prompt_ids(prompt, chat=chat), constraint, Recorder(found, per_task),
                  SMCConfig(particles=8, max_tokens=40, ess_threshold=0.0), np.random.default_rng(seed))
        run_smc_many(model, [job])
        rows += [(name, mass, accepted) for mass, accepted in found]
        print(f"  {name}: {len(found)} distributions", file=sys.stderr, flush=True)
    return rows


# -- exact conditional moments ----------------------------------------------------------------

def loop_one(logp: np.ndarray, is_valid: np.ndarray, rng) -> tuple[int, np.ndarray]:
    """One Gumbel race: the first accepted token and the mask of tokens rejected before it."""
    keys = logp + rng.gumbel(size=len(logp))
    valid_keys = np.where(is_valid, keys, -np.inf)
    x = int(np.argmax(valid_keys))
    rejected = (~is_valid) & (keys > keys[x])
    return x, rejected


def remainder_moments(mass, is_valid, x, rejected, theta=DEFAULT_ROULETTE):
    untested = ~rejected & (mass > 0)
    untested[x] = False
    m_u = mass[untested].sum()
    z_u = mass[untested & is_valid].sum()
    if m_u <= 0:
        return 0.0, 0.0
    q = 1.0 if theta <= 0 else min(1.0, m_u / (theta * mass[x]))
    b = q * z_u / m_u
    return (m_u / q) ** 2 * b * (1 - b), q  # variance, expected extra checks


def poisson_moments(mass, is_valid, x, rejected, n0, c=DEFAULT_POISSON_VARIANCE):
    untested = ~rejected & (mass > 0)
    untested[x] = False
    m_u = mass[untested].sum()
    horizon = poisson_horizon(float(mass[x]), float(m_u), int(n0), variance=c)
    if horizon <= 0:
        return 0.0, 0.0
    p_valid = mass[untested & is_valid]
    pi = -np.expm1(-p_valid * horizon)
    variance = float(np.sum(p_valid**2 * (1 - pi) / pi))
    checks = float(np.sum(-np.expm1(-mass[untested] * horizon)))
    return variance, checks


BINS = 160
_U_NODES, _U_WEIGHTS = np.polynomial.legendre.leggauss(48)
_U_NODES, _U_WEIGHTS = (_U_NODES + 1) / 2, _U_WEIGHTS / 2
# s = Z t on a log grid (trapezoid in log s): transitions at s ~ Z / p_b may be very early
_LOG_S = np.linspace(np.log(1e-10), np.log(60.0), 300)
_S_NODES = np.exp(_LOG_S)
_S_WEIGHTS = np.exp(-_S_NODES) * _S_NODES * np.gradient(_LOG_S)


def two_loop_second_moment(mass, is_valid, rejected, n0, z):
    """E[w^2 | loop 1] for w = (P - psi0) / (n0 + n1 + 1), by quadrature over the loop-2 race.

    n1 counts invalid tokens of S = V minus R0 arriving before the first valid one:
    E[1/(k + n1)^2] = int_0^1 (-ln u) u^(k-1) E[u^n1] du and
    E[u^n1] = int_0^inf e^-s prod_b (1 - (1 - u)(1 - exp(-p_b s / z))) ds (s = Z t).
    Invalid masses are pooled in 160 log-spaced bins.
    """
    left = mass[~rejected & (mass > 0)].sum()
    invalid = mass[(~rejected) & (~is_valid) & (mass > 0)]
    k = n0 + 1
    if len(invalid) == 0:
        return left**2 / k**2, 0.0
    edges = np.logspace(np.log10(invalid.min()) - 1e-9, np.log10(invalid.max()) + 1e-9, BINS + 1)
    which = np.clip(np.searchsorted(edges, invalid) - 1, 0, BINS - 1)
    counts = np.bincount(which, minlength=BINS).astype(float)
    sums = np.bincount(which, weights=invalid, minlength=BINS)
    keep = counts > 0
    p_bin, n_bin = sums[keep] / counts[keep], counts[keep]
    t = _S_NODES / z  # (S,)
    arrive = -np.expm1(-np.outer(t, p_bin))  # (S, B)
    one_minus_u = 1 - _U_NODES  # (U,)
    log_terms = np.log1p(-one_minus_u[:, None, None] * arrive[None, :, :])  # (U, S, B)
    gen = np.exp((log_terms * n_bin).sum(axis=2)) @ _S_WEIGHTS  # E[u^n1], (U,)
    inverse_square = float(np.sum(_U_WEIGHTS * (-np.log(_U_NODES)) * _U_NODES ** (k - 1) * gen))
    expected_n1 = float(np.sum(n_bin * p_bin / (p_bin + z)))
    return left**2 * inverse_square, expected_n1


def measure(rows, loop1: int, seed: int):
    rng = np.random.default_rng(seed)
    results = {name: {"relvar": [], "checks": []} for name in ("poisson", "remainder", "two-loop")}
    for _, mass, accepted in rows:
        is_valid = np.zeros(len(mass), dtype=bool)
        is_valid[accepted] = True
        z = float(mass[accepted].sum())
        with np.errstate(divide="ignore"):
            logp = np.log(mass)
        sums = {name: [0.0, 0.0] for name in results}
        for _ in range(loop1):
            x, rejected = loop_one(logp, is_valid, rng)
            n0 = int(rejected.sum())
            var, extra = poisson_moments(mass, is_valid, x, rejected, n0)
            sums["poisson"][0] += var
            sums["poisson"][1] += n0 + 1 + extra
            var, extra = remainder_moments(mass, is_valid, x, rejected)
            sums["remainder"][0] += var
            sums["remainder"][1] += n0 + 1 + extra
            second, n1 = two_loop_second_moment(mass, is_valid, rejected, n0, z)
            sums["two-loop"][0] += second
            sums["two-loop"][1] += n0 + 1 + n1 + 1
        for name, (first, checks) in sums.items():
            value = first / loop1
            relvar = (value - z * z) / (z * z) if name == "two-loop" else value / (z * z)
            results[name]["relvar"].append(max(relvar, 0.0))
            results[name]["checks"].append(checks / loop1)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--distributions", type=int, default=300)
    parser.add_argument("--loop1", type=int, default=64, help="loop-1 races per distribution")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = awrs.load_model(backend=args.backend, verbose=False)
    per_task = math.ceil(args.distributions / len(tasks()))
    print(f"collecting about {per_task} distributions per task on {model.name} ({model.backend})",
          file=sys.stderr, flush=True)
    rows = collect(model, per_task, args.seed)
    results = measure(rows, args.loop1, args.seed)
    kinds = sorted({name for name, _, _ in rows})
    print(f"\n{len(rows)} real next-token distributions ({', '.join(kinds)}), {args.loop1} loop-1 races each; "
          f"seed {args.seed}; {time.perf_counter() - started:.0f} s\n")
    print("| estimator | Var(w)/Z² median | 95th pct | max | checks per call median | 95th pct | max |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        v, c = np.array(r["relvar"]), np.array(r["checks"])
        print(f"| {name} | {np.median(v):.3g} | {np.percentile(v, 95):.3g} | {v.max():.3g} | "
              f"{np.median(c):.3g} | {np.percentile(c, 95):.3g} | {c.max():.3g} |")
    print("\nper task, 95th percentile of Var(w)/Z²:")
    for kind in kinds:
        idx = [i for i, (name, _, _) in enumerate(rows) if name == kind]
        cells = ", ".join(f"{name} {np.percentile(np.array(r['relvar'])[idx], 95):.3g}" for name, r in results.items())
        print(f"  {kind} ({len(idx)}): {cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
