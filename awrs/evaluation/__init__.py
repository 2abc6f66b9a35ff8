"""Evaluation harness: the paper's domains (paper notes §4) on any awrs model.

    from awrs.evaluation import run_eval, format_summary, make_report
    summary = run_eval(model, "patterns", "../shared/data/patterns", "awrs-smc",
                       particles=5, max_tokens=32, limit=20, seed=0, out_path="results.jsonl",
                       progress=True)
    print(format_summary(summary))
    make_report(["results.jsonl"], "report.md", plot="report.png")

Domains live one per module in ``awrs.evaluation.domains`` (see its ``DOMAINS`` registry).
"""

from .base import Domain, Instance
from .domains import DOMAINS, get_domain
from .methods import ALL_METHODS, EVAL_METHODS, run_method
from .report import make_report
from .runner import format_summary, read_records, run_eval, score_outputs, summarize

__all__ = [
    "ALL_METHODS", "DOMAINS", "EVAL_METHODS", "Domain", "Instance", "format_summary", "get_domain",
    "make_report", "read_records", "run_eval", "run_method", "score_outputs", "summarize",
]
