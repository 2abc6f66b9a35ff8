"""``make_report``: tables per domain (rows: methods) and a plot of accuracy against time."""

from __future__ import annotations

from pathlib import Path

from .methods import ALL_METHODS
from .runner import read_records, record_label, summarize, time_split

COLUMNS = [
    ("accuracy", "accuracy", ".3f"),
    ("best_accuracy", "best-sample acc.", ".3f"),
    ("valid_rate", "valid rate", ".3f"),
    ("no_output_rate", "no output", ".3f"),
    ("seconds_per_instance", "s / instance", ".2f"),
    (time_split, "model (prompt) / constraint / sampler s", None),
    ("checks_per_token", "checks / token", ".2f"),
    ("model_calls_per_token", "model calls / token", ".3f"),
    ("instances", "instances", "d"),
    ("skipped", "skipped", "d"),
]


def collect(paths) -> dict[str, dict[str, dict]]:
    """``{domain: {method: summary}}`` over the lines of every results file (later lines win per id).

    A method run with options, or with another particle count than the domain's most common
    one, is its own row: ``awrs-smc (ess_threshold=0.0)``, ``lcd [1 particle]``.
    """
    groups: dict[tuple, dict[str, dict]] = {}
    for path in paths:
        for record in read_records(path):
            if record.get("method") is None:
                continue
            key = (record.get("domain"), record_label(record), record.get("particles"))
            if key[0] is None or "id" not in record:
                continue
            groups.setdefault(key, {})[record["id"]] = record
    usual: dict[str, int] = {}
    for domain in {key[0] for key in groups}:
        counts: dict = {}
        for (d, _, n), by_id in groups.items():
            if d == domain and n is not None:
                counts[n] = counts.get(n, 0) + len(by_id)
        usual[domain] = max(counts, key=counts.get) if counts else None
    for (domain, label, n) in [key for key in groups if key[2] is None]:  # e.g. skipped lines
        groups.setdefault((domain, label, usual[domain]), {}).update(groups.pop((domain, label, n)))
    out: dict[str, dict[str, dict]] = {}
    for (domain, method, n), by_id in groups.items():
        if n != usual[domain]:
            method = f"{method} [{n} particle{'s' if n != 1 else ''}]"
        summary = summarize(list(by_id.values()))
        models = sorted({str(r.get("model")) for r in by_id.values()})
        particles = sorted({r.get("particles") for r in by_id.values() if r.get("particles") is not None})
        summary.update(models=models, particles=particles)
        out.setdefault(domain, {})[method] = summary
    return out


def _order(method: str) -> tuple:
    return (ALL_METHODS.index(method) if method in ALL_METHODS else len(ALL_METHODS), method)


def _cell(value, spec) -> str:
    return "—" if value is None else format(value, spec)


def make_report(paths, out_md: str | Path, plot: str | Path | None = None) -> str:
    """Write a Markdown report of the results files ``paths``; return its text.

    One table per domain: rows are methods; columns are accuracy (posterior-weighted),
    best-sample accuracy, valid rate, share of instances with no output (every particle died or
    none was valid), seconds per instance, and its generation time split into model (of which
    prompt reading) / constraint / sampler seconds, constraint checks per token, model
    calls per token, instances and skipped (plus domain extras, e.g. diversity). With ``plot``,
    also a PNG of accuracy against seconds per instance, one point per method, one panel per
    domain.
    """
    data = collect(paths)
    lines = ["# awrs evaluation report", ""]
    lines.append("Sources: " + ", ".join(f"`{Path(p).name}`" for p in paths))
    lines.append("")
    for domain in sorted(data):
        methods = data[domain]
        extras = sorted({k for s in methods.values() for k in s["extra"]})
        header = ["method", "particles"] + [title for _, title, _ in COLUMNS] + extras
        lines += [f"## {domain}", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for method in sorted(methods, key=_order):
            s = methods[method]
            row = [method, ",".join(map(str, s["particles"])) or "—"]
            row += [_cell(key(s), "s") if callable(key) else _cell(s[key], spec) for key, _, spec in COLUMNS]
            row += [_cell(s["extra"].get(k), ".3f") for k in extras]
            lines.append("| " + " | ".join(row) + " |")
        models = sorted({m for s in methods.values() for m in s["models"]})
        lines += ["", f"Model: {', '.join(models)}.", ""]
        reasons: dict[str, int] = {}
        for s in methods.values():
            for reason, count in s["skip_reasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        if reasons:
            lines.append("Skipped: " + "; ".join(f"{count}× {r[:80]}" for r, count in reasons.items()) + ".")
            lines.append("")
    if plot is not None and data:
        _plot(data, plot)
        lines += [f"![accuracy against seconds per instance]({Path(plot).name})", ""]
    text = "\n".join(lines)
    Path(out_md).write_text(text, encoding="utf-8")
    return text


def _plot(data: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = sorted(data)
    columns = min(3, len(domains))
    rows = -(-len(domains) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.6 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    methods = sorted({m for d in domains for m in data[d]}, key=_order)
    color = {m: palette(k % 10) for k, m in enumerate(methods)}
    for ax, domain in zip(axes.flat, domains):
        for method in sorted(data[domain], key=_order):
            s = data[domain][method]
            if s["accuracy"] is None or s["seconds_per_instance"] is None:
                continue
            ax.scatter([s["seconds_per_instance"]], [s["accuracy"]], label=method, s=40, color=color[method])
            ax.annotate(method, (s["seconds_per_instance"], s["accuracy"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_title(domain)
        ax.set_xlabel("seconds per instance")
        ax.set_ylabel("accuracy (posterior-weighted)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(domains):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
