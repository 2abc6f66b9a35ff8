"""``awrs bench --vocabularies``: how AWRS's edge over token masking grows with the vocabulary.

The same two tasks on every model given (by default :data:`DEFAULT_MODELS`, 49,152 and 262,144
tokens), the same prompts, seeds and particles:

* ``regex``: a yes/no answer and a reason (the regex of ``awrs bench --scaling``);
* ``json``: a small JSON Schema (an answer from an enum and a short reason).

Rows, each measured in this process:

* ``unconstrained``: the model's own sampling (the speed ceiling);
* ``awrs-smc``: the default, which checks the few tokens it draws;
* ``awrs-smc exact masks`` (regex): the same with awrs's own whole-vocabulary mask every step
  (``masks="always"``: its automaton walked over the vocabulary's byte trie);
* ``masking-smc``: SMC with token masking by checking every token, V checks per particle and
  step (run for fewer tokens: it is slow by design);
* ``llguidance mask``: a mask engine as serving stacks use one -- llguidance's own compiler for
  the regex or schema, its token mask computed every step for every row, and the next token
  drawn from the masked distribution (locally constrained decoding; no weights). Its text
  follows llguidance's reading of the schema (its JSON whitespace rules), not awrs's.

ms per particle-token is the run's seconds over the particle-tokens it wrote (the model's
forward passes included), so ratios between rows of one model compare like with like.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence

import numpy as np

from ..constraints import JsonSchema, Regex
from ..generate import generate
from ..models.base import LanguageModel
from ..sampling.draw import NO_TOKEN, MassDrawer
from ..sampling.masses import token_masses

REGEX = r" (yes|no), because [a-z ,]{3,40}\."
REGEX_PROMPT = "Is the sea salty? Answer yes or no, then say why in a few words:"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"enum": ["yes", "no"]}, "reason": {"type": "string", "maxLength": 40}},
    "required": ["answer", "reason"],
    "additionalProperties": False,
}
JSON_PROMPT = 'Is the sea salty? Reply in JSON with "answer" and "reason":'

#: the models ``--vocabularies`` compares unless ``--model`` names one: the smallest and the
#: largest vocabulary among the named models
DEFAULT_MODELS = ("smollm2-135m", "gemma3-270m")


def _tasks() -> list[tuple[str, str, object, dict]]:
    """(name, prompt, awrs constraint, llguidance grammar source)"""
    return [
        ("regex", REGEX_PROMPT, Regex(REGEX), {"regex": REGEX}),
        ("json", JSON_PROMPT, JsonSchema(SCHEMA), {"json_schema": SCHEMA}),
    ]


def llguidance_lcd(model: LanguageModel, prompt_ids: Sequence[int], grammar: dict, *, particles: int,
                   max_tokens: int, seed: int) -> dict:
    """Locally constrained decoding with llguidance's masks: every row, every step, a mask.

    Returns particle-tokens, seconds (total, model, masks) and how many rows ended accepted.
    """
    from ..constraints.grammar.grammar import _llguidance, vocabulary_tokenizer

    llg = _llguidance()
    vocab = model.vocab
    _, tokenizer = vocabulary_tokenizer(vocab)
    if "regex" in grammar:
        source = llg.LLMatcher.grammar_from_regex(grammar["regex"])
    else:
        source = llg.LLMatcher.grammar_from_json_schema(json.dumps(grammar["json_schema"]))
    base = llg.LLMatcher(tokenizer, source, log_level=0)
    if base.is_error():
        raise RuntimeError(f"llguidance cannot compile the task: {base.get_error()}")
    size = len(vocab)
    eos = vocab.eos_ids
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    model_seconds = mask_seconds = 0.0
    clock = time.perf_counter()
    session = model.open(list(prompt_ids), particles)
    model_seconds += time.perf_counter() - clock
    matchers = [base.deep_copy() for _ in range(particles)]
    live = list(range(particles))
    tokens = accepted = 0
    try:
        for _ in range(max_tokens):
            clock = time.perf_counter()
            logprobs = session.logprobs()
            model_seconds += time.perf_counter() - clock
            mass, blocks = token_masses(logprobs, vocab)  # as awrs's own steps compute them
            parents, chosen, still = [], [], []
            for row, particle in enumerate(live):
                matcher = matchers[particle]
                clock = time.perf_counter()
                bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
                allowed = np.unpackbits(bits, bitorder="little", count=size).view(bool)
                mask_seconds += time.perf_counter() - clock
                drawer = MassDrawer(mass[row], rng, blocks[row])
                drawer.restrict(allowed)  # control tokens already have no mass
                token = drawer.draw()
                tokens += 1
                if token == NO_TOKEN:
                    continue  # a dead end: the row stops
                if token in eos:
                    accepted += int(matcher.is_accepting())
                    continue
                matcher.consume_token(token)
                parents.append(row)
                chosen.append(token)
                still.append(particle)
            if not still:
                break
            clock = time.perf_counter()
            session.step(np.array(parents, dtype=np.int64), np.array(chosen, dtype=np.int64))
            model_seconds += time.perf_counter() - clock
            live = still
    finally:
        session.close()
    return {"particle_tokens": tokens, "seconds": time.perf_counter() - started, "model_seconds": model_seconds,
            "mask_seconds": mask_seconds, "valid": accepted}


def _row(seconds: float, tokens: int, checks: float, model_seconds: float, valid: float) -> dict:
    return {"ms_per_particle_token": 1000 * seconds / max(tokens, 1), "checks_per_token": checks,
            "model_share": model_seconds / max(seconds, 1e-12), "valid_per_run": valid}


def measure_model(model: LanguageModel, *, particles: int = 10, max_tokens: int = 30, masking_tokens: int = 3,
                  seeds: int = 2, progress: bool = True) -> dict:
    """Every row of every task on ``model``; the median over ``seeds`` runs of each figure."""
    chat = model.has_chat_template
    out: dict = {"model": model.name, "vocabulary": len(model.vocab), "backend": model.runs_as, "chat": chat,
                 "particles": particles, "max_tokens": max_tokens, "masking_tokens": masking_tokens, "tasks": {}}
    for name, prompt, constraint, grammar in _tasks():
        generate(model, prompt, constraint, chat=chat, particles=particles, max_tokens=2, seed=0)  # warm-up
        variants = [("unconstrained", {"method": "unconstrained"}, max_tokens),
                    ("awrs-smc", {}, max_tokens)]
        if name == "regex":
            variants.append(("awrs-smc exact masks", {"masks": "always"}, max_tokens))
        variants.append(("masking-smc", {"method": "masking-smc"}, masking_tokens))
        rows = {}
        for label, options, limit in variants:
            figures = []
            for seed in range(seeds):
                result = generate(model, prompt, constraint, chat=chat, particles=particles, max_tokens=limit,
                                  seed=seed, **options)
                s = result.stats
                figures.append(_row(s.total_seconds, s.tokens, s.checks_per_token, s.model_seconds,
                                    sum(1 for x in result.samples if x.valid)))
            rows[label] = _median(figures)
            if progress:
                print(f"bench: V={len(model.vocab):<7} {name:<6} {label:<22} "
                      f"{rows[label]['ms_per_particle_token']:8.2f} ms/particle-token", file=sys.stderr, flush=True)
        prompt_ids = model.prompt_ids(prompt, chat=chat)
        llguidance_lcd(model, prompt_ids, grammar, particles=particles, max_tokens=2, seed=0)  # warm-up
        figures = []
        for seed in range(seeds):
            run = llguidance_lcd(model, prompt_ids, grammar, particles=particles, max_tokens=max_tokens, seed=seed)
            figures.append(_row(run["seconds"], run["particle_tokens"], float("nan"), run["model_seconds"],
                                run["valid"]) | {"mask_ms": 1000 * run["mask_seconds"] / max(run["particle_tokens"], 1)})
        rows["llguidance mask"] = _median(figures)
        if progress:
            print(f"bench: V={len(model.vocab):<7} {name:<6} {'llguidance mask':<22} "
                  f"{rows['llguidance mask']['ms_per_particle_token']:8.2f} ms/particle-token", file=sys.stderr, flush=True)
        awrs = rows["awrs-smc"]["ms_per_particle_token"]
        out["tasks"][name] = {
            "rows": rows,
            "masking_over_awrs": rows["masking-smc"]["ms_per_particle_token"] / awrs,
            "llguidance_over_awrs": rows["llguidance mask"]["ms_per_particle_token"] / awrs,
            "awrs_vs_unconstrained_throughput": rows["unconstrained"]["ms_per_particle_token"] / awrs,
        }
    return out


def _median(figures: list[dict]) -> dict:
    keys = figures[0].keys()
    return {k: statistics.median(f[k] for f in figures) for k in keys} | {
        "range_ms": [min(f["ms_per_particle_token"] for f in figures), max(f["ms_per_particle_token"] for f in figures)]}


def format_vocabularies(reports: list[dict]) -> str:
    """A Markdown table per task: a row per method, a column group per model."""
    head = reports[0]
    lines = [(f"AWRS against token masking as the vocabulary grows ({head['particles']} particles, "
              f"{head['max_tokens']} tokens, masking-smc {head['masking_tokens']}; median of the seeds, "
              "range in brackets)")]
    for task in reports[0]["tasks"]:
        heads = [f"{r['model']} (V={r['vocabulary']:,})" for r in reports]
        lines += ["", f"**{task}**", "", "| method | " + " | ".join(heads) + " |", "|---|" + "---|" * len(reports)]
        for method in reports[0]["tasks"][task]["rows"]:
            cells = []
            for report in reports:
                row = report["tasks"][task]["rows"].get(method)
                if row is None:
                    cells.append("–")
                    continue
                low, high = row["range_ms"]
                checks = "" if row["checks_per_token"] != row["checks_per_token"] else \
                    f"; {row['checks_per_token']:,.1f} checks/token"
                mask = f"; masks {row['mask_ms']:.2f} ms/token" if "mask_ms" in row else ""
                cells.append(f"{row['ms_per_particle_token']:.2f} ms ({low:.2f}–{high:.2f}){checks}{mask}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        for key, label in (("masking_over_awrs", "masking-smc / awrs-smc, ms per particle-token"),
                           ("llguidance_over_awrs", "llguidance mask / awrs-smc"),
                           ("awrs_vs_unconstrained_throughput", "awrs-smc throughput / unconstrained")):
            lines.append(f"| *{label}* | " + " | ".join(f"{r['tasks'][task][key]:.2f}x" for r in reports) + " |")
    return "\n".join(lines)
