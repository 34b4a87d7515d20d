"""How a report looks: Markdown and HTML pages, CSV tables, PNG plots, the terminal summary.

One list of blocks (headings, paragraphs, tables, images) renders to both Markdown and HTML,
so the two files always say the same thing.
"""

from __future__ import annotations

import html as html_lib
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from src.analysis import stats
from src.analysis.compare import Analysis, Cell, Comparison, level_name
from src.analysis.runs import METRICS, SIZE_FACTOR, STATES, Artifacts, label_names
from src.config.outputs import open_output, output_folder, write_text
from src.data import streams
from src.tracking.names import RunState
from src.tracking.uris import redact
from src.training.figures import confusion_matrix_figure

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
tr.best td { background: #eef7ee; }
img { max-width: 900px; display: block; margin: 1em 0; }
div.wrap { overflow-x: auto; max-width: 100%; }
"""


# --------------------------------------------------------------------------- blocks


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    text_columns: int = 0  # the first N columns are left-aligned text
    highlight: int | None = None  # row index shown as the best


Block = tuple[str, Any]  # ("h1" | "h2" | "p" | "table" | "img" | "ul", payload)


def fmt(value: Any) -> str:
    """A factor value as a table shows it."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def fmt_p(p: float) -> str:
    """A p-value with three decimals; '<0.001' below that (the bootstrap's resolution)."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def metric_title(metric: str) -> str:
    return dict(METRICS).get(metric, metric)


def blocks(analysis: Analysis, plots: Sequence[Path], out_dir: Path, generated: str) -> list[Block]:
    """The report's content, top to bottom."""
    runs = analysis.runs
    out: list[Block] = [("h1", f"Report: {runs.experiment}"), ("p", overview(analysis, generated))]
    out += [("h2", "Test metrics by configuration"), ("p", cells_note(analysis))]
    out.append(("table", cells_table(analysis)))
    out += best_blocks(analysis)
    out += comparison_blocks(analysis)
    out += excluded_blocks(analysis)
    if analysis.importances:
        out.append(("h2", "Optuna parameter importances (fANOVA, test metric)"))
        rows = [[k, f"{v:.3f}"] for k, v in analysis.importances.items()]
        out.append(("table", Table(["parameter", "importance"], rows, text_columns=1)))
    if plots:
        out.append(("h2", "Plots"))
        out += [("img", p.relative_to(out_dir).as_posix()) for p in plots]
    return out


def overview(analysis: Analysis, generated: str) -> str:
    runs = analysis.runs
    counts = state_counts(analysis)
    text = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    parents = len(runs.parents)
    return (
        f"{sum(counts.values())} runs in MLflow experiment `{runs.experiment}` at "
        f"`{redact(runs.uri)}` ({text}); {parents} sweep parent run(s). Generated {generated}."
    )


def state_counts(analysis: Analysis) -> dict[str, int]:
    counts: dict[str, int] = {RunState.completed: len(analysis.runs.jobs)}
    for state in STATES[1:]:
        counts[state] = int((analysis.runs.excluded.state == state).sum())
    return counts


def cells_note(analysis: Analysis) -> str:
    level = f"{100 * analysis.confidence:g} %"
    factors = ", ".join(f"`{f}`" for f in analysis.factors) or "none (all runs are one cell)"
    seeds = sorted({len(c.runs) for c in analysis.cells})
    alpha = 1 - analysis.confidence
    return (
        f"Swept factors: {factors}. Each cell: test metric mean ± half-width of the {level} "
        f"t-interval over its distinct seeds (seeds = {', '.join(map(str, seeds)) or 0} per "
        f"cell; a run repeating a configuration and seed is one observation, listed below; a "
        f"single run has no ±). MDE: the smallest difference in test "
        f"{metric_title(analysis.metric)} that a comparison of this cell with one of the same "
        f"seed spread and seeds detects with {100 * stats.POWER:g} % power at α = {alpha:g} "
        f"(– with one seed: its spread is unknown). Best configuration by test "
        f"{metric_title(analysis.metric)} is highlighted. {test_data_note(analysis.test_data)}"
    )


def test_data_note(state: str) -> str:
    """What the table says about the test data its runs were tested on."""
    if state == "same":
        return "Test data: the runs of each seed recorded the same test split (digest)."
    if state.startswith("differ"):
        return (
            f"**Test data differ** between cells of the same seed: {state.removeprefix('differ ')}"
            f"; cells tested on different data are not compared like for like."
        )
    return f"Test data: test-split digests {state}."


def cells_table(analysis: Analysis) -> Table:
    headers = [*analysis.factors, "seeds", *(title for _, title in METRICS), "MDE"]
    rows = []
    for cell in analysis.cells:
        values = [fmt(v) for v in cell.key]
        rows.append(
            [
                *values,
                str(len(cell.runs)),
                *(cell.intervals[m].format() for m, _ in METRICS),
                fmt_effect(cell.mde),
            ]
        )
    best = analysis.cells.index(analysis.best) if analysis.best is not None else None
    return Table(headers, rows, text_columns=len(analysis.factors), highlight=best)


def fmt_effect(value: float) -> str:
    """A difference of a metric, '–' when there is none (one seed)."""
    return "–" if math.isnan(value) else f"{value:.4f}"


def fmt_p_or_none(p: float) -> str:
    """A p-value, '–' when there is none (one seed, or not tested)."""
    return "–" if math.isnan(p) else fmt_p(p)


def describe_cell(analysis: Analysis, cell: Cell) -> str:
    parts = [f"{f}={fmt(v)}" for f, v in zip(analysis.factors, cell.key, strict=True)]
    return ", ".join(parts) or "all runs"


def best_blocks(analysis: Analysis) -> list[Block]:
    if analysis.best is None:
        return [("p", "**No completed run**: nothing to tabulate (see the runs below).")]
    title = f"Best configuration: {describe_cell(analysis, analysis.best)}"
    out: list[Block] = [("h2", title)]
    run = analysis.best_run
    if run is not None:
        out.append(
            (
                "p",
                f"Per-class test metrics (sklearn classification report), mean ± CI over its "
                f"{len(analysis.best.runs)} run(s). Best single run: `{run.run_id}` "
                f"({run.run_name}, test {metric_title(analysis.metric)} "
                f"{run[analysis.metric]:.4f}).",
            )
        )
    if analysis.per_class is None:
        out.append(("p", "No classification report artifacts found for these runs."))
        return out
    rows = [
        [
            str(r["class"]),
            r["precision"].format(),
            r["recall"].format(),
            r["f1-score"].format(),
            f"{r['support']:.0f}" if float(r["support"]).is_integer() else f"{r['support']:.1f}",
        ]
        for _, r in analysis.per_class.iterrows()
    ]
    out.append(("table", Table(["class", "precision", "recall", "F1", "support"], rows, 1)))
    return out


def comparison_blocks(analysis: Analysis) -> list[Block]:
    if analysis.compare is None:
        return [("h2", "Comparisons"), ("p", "Nothing was swept: there is nothing to compare.")]
    metric = metric_title(analysis.metric)
    level = f"{100 * analysis.confidence:g} %"
    alpha = 1 - analysis.confidence
    out: list[Block] = [
        ("h2", f"Comparisons of `{analysis.compare}`"),
        (
            "p",
            f"Δ = test {metric}(B) − test {metric}(A) on the same test examples (matched by id), "
            f"per seed both arms ran, then averaged. The training seed is the unit: a paired "
            f"t-test over the per-seed differences gives the {level} interval of Δ and the "
            f"two-sided p, so seed-to-seed variance is in both (and test-sample variance where "
            f"each seed draws its own test sample). The comparisons of this section are one "
            f"family: p (Holm) is Holm–Bonferroni adjusted over the {tested(analysis)} tested "
            f"here, which keeps the chance of any false 'better' in the section at or under "
            f"α = {alpha:g}. Verdict: '… better' only when p (Holm) < {alpha:g}. MDE: the "
            f"smallest true Δ these seeds detect with {100 * stats.POWER:g} % power at the "
            f"section's strictest level α/m, given the spread of the per-seed differences; "
            f"'no significant difference' is no evidence of equality for differences below it. "
            f"With one seed there is no verdict: its interval covers test examples only. Test "
            f"data: whether both arms of each seed recorded the same test-split digest in "
            f"MLflow; where they differ there is no verdict.",
        ),
    ]
    others = [f for f in analysis.factors if f != analysis.compare]
    headers = [
        *others,
        "A",
        "B",
        "seeds",
        f"Δ {metric}",
        f"{level} CI",
        "p",
        "p (Holm)",
        "MDE",
        "Δ per seed",
        "test data",
        "verdict",
    ]
    rows = []
    for c in analysis.comparisons:
        t = c.test
        rows.append(
            [
                *(fmt(c.stratum[f]) for f in others),
                fmt(c.a),
                fmt(c.b),
                str(t.n_seeds),
                f"{t.delta:+.4f}",
                interval_text(c),
                fmt_p_or_none(t.p_value),
                fmt_p_or_none(c.p_adjusted),
                fmt_effect(c.mde),
                ", ".join(f"{d:+.3f}" for d in t.per_seed),
                c.test_data,
                c.verdict,
            ]
        )
    if rows:
        out.append(("table", Table(headers, rows, text_columns=len(others) + 2)))
    else:
        out.append(("p", "No comparison possible: the factor has one level only."))
    if analysis.skipped_comparisons:
        out.append(("ul", [f"skipped: {s}" for s in analysis.skipped_comparisons]))
    return out


def tested(analysis: Analysis) -> str:
    """'3 comparisons' of the section that have a p-value."""
    m = sum(not math.isnan(c.p_adjusted) for c in analysis.comparisons)
    return f"{m} comparison{'s' if m != 1 else ''}"


def interval_text(c: Comparison) -> str:
    """The interval of Δ over seeds; with one seed, over test examples only, marked so."""
    if c.examples_only is not None:
        r = c.examples_only
        return f"[{r.low:+.4f}, {r.high:+.4f}] (test examples only)"
    return f"[{c.test.low:+.4f}, {c.test.high:+.4f}]"


def excluded_blocks(analysis: Analysis) -> list[Block]:
    excluded = analysis.runs.excluded
    out: list[Block] = [("h2", "Runs not in the tables")]
    if excluded.empty:
        return [*out, ("p", "None: every run of the experiment completed.")]
    counts = state_counts(analysis)
    text = ", ".join(f"{n} {s}" for s, n in counts.items() if n and s != RunState.completed)
    out.append(("p", f"{len(excluded)} run(s) not used: {text}."))
    shown = [f for f in analysis.factors if f in excluded.columns] + ["seed"]
    shown = [f for f in dict.fromkeys(shown) if f in excluded.columns]
    rows = [
        [
            str(r.run_id)[:12],
            str(r.run_name),
            str(r.state),
            *(fmt(r[f]) for f in shown),
            str(r.reason),
        ]
        for _, r in excluded.iterrows()
    ]
    headers = ["run", "name", "state", *shown, "reason"]
    out.append(("table", Table(headers, rows, text_columns=len(headers))))
    return out


# --------------------------------------------------------------------------- Markdown / HTML


def markdown(analysis: Analysis, plots: Sequence[Path], out_dir: Path, generated: str) -> str:
    """The report as Markdown (pipe tables)."""
    kinds: dict[str, Callable[[Any], str]] = {
        "h1": lambda text: f"# {text}",
        "h2": lambda text: f"## {text}",
        "p": str,
        "table": markdown_table,
        "img": lambda path: f"![{Path(path).stem}]({path})",
        "ul": lambda items: "\n".join(f"- {item}" for item in items),
    }
    parts = [kinds[kind](payload) for kind, payload in blocks(analysis, plots, out_dir, generated)]
    return "\n\n".join(parts) + "\n"


def markdown_table(table: Table) -> str:
    def row(cells: Sequence[str], bold: bool = False) -> str:
        cells = [c.replace("|", "\\|") for c in cells]
        if bold:
            cells = [f"**{c}**" if c else c for c in cells]
        return "| " + " | ".join(cells) + " |"

    align = [":--" if i < table.text_columns else "--:" for i in range(len(table.headers))]
    lines = [row(table.headers), "| " + " | ".join(align) + " |"]
    lines += [row(r, bold=i == table.highlight) for i, r in enumerate(table.rows)]
    return "\n".join(lines)


def html(analysis: Analysis, plots: Sequence[Path], out_dir: Path, generated: str) -> str:
    """The report as a standalone HTML page."""
    esc = html_lib.escape
    kinds: dict[str, Callable[[Any], str]] = {
        "h1": lambda text: f"<h1>{inline(esc(str(text)))}</h1>",
        "h2": lambda text: f"<h2>{inline(esc(str(text)))}</h2>",
        "p": lambda text: f"<p>{inline(esc(str(text)))}</p>",
        "table": html_table,
        "img": lambda path: f'<img src="{esc(path)}" alt="{esc(Path(path).stem)}">',
        "ul": lambda items: "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>",
    }
    body = [kinds[kind](payload) for kind, payload in blocks(analysis, plots, out_dir, generated)]
    title = esc(f"Report: {analysis.runs.experiment}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def inline(text: str) -> str:
    """`code` and **bold** of the Markdown paragraphs as HTML (text already escaped)."""
    parts = text.split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))


def html_table(table: Table) -> str:
    esc = html_lib.escape

    def cls(i: int) -> str:
        return ' class="text"' if i < table.text_columns else ""

    head = "".join(f"<th{cls(i)}>{esc(h)}</th>" for i, h in enumerate(table.headers))
    rows = []
    for n, r in enumerate(table.rows):
        tr = '<tr class="best">' if n == table.highlight else "<tr>"
        rows.append(tr + "".join(f"<td{cls(i)}>{esc(c)}</td>" for i, c in enumerate(r)) + "</tr>")
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="wrap">{table_html}</div>'  # wide tables scroll, the page does not


# --------------------------------------------------------------------------- CSV


def summary_frame(analysis: Analysis) -> pd.DataFrame:
    """One row per cell: factor values, n (distinct seeds), each metric's mean and CI
    half-width, and the report metric's minimum detectable effect."""
    rows = []
    for cell in analysis.cells:
        row: dict[str, Any] = dict(zip(analysis.factors, cell.key, strict=True))
        row["n"] = len(cell.runs)
        row["run_ids"] = " ".join(cell.runs.run_id)
        for m, _ in METRICS:
            iv = cell.intervals[m]
            row |= {f"{m}_mean": iv.mean, f"{m}_ci": iv.half_width}
        row[f"{analysis.metric}_mde"] = cell.mde
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_frame(analysis: Analysis) -> pd.DataFrame:
    """One row per comparison."""
    rows = []
    for c in analysis.comparisons:
        t = c.test
        low, high = (t.low, t.high)
        if c.examples_only is not None:
            low, high = c.examples_only.low, c.examples_only.high
        rows.append(
            {
                **c.stratum,
                "factor": analysis.compare,
                "a": c.a,
                "b": c.b,
                "metric": analysis.metric,
                "seeds": " ".join(map(str, c.seeds)),
                "n_seeds": t.n_seeds,
                "delta": t.delta,
                "low": low,
                "high": high,
                "interval_over": "seeds" if c.examples_only is None else "test examples",
                "sd_per_seed": t.sd,
                "p_value": t.p_value,
                "p_holm": c.p_adjusted,
                "mde": c.mde,
                "n_examples": c.n_examples,
                "test_data": c.test_data,
                "verdict": c.verdict,
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- plots


def write_plots(analysis: Analysis, artifacts: Artifacts, plot_dir: Path) -> list[Path]:
    """Learning curves, metric vs each factor, the best run's confusion matrix, importances."""
    output_folder(plot_dir)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = plot_dir / name
        with open_output(path, binary=True) as out:
            fig.savefig(out, dpi=110, format="png")
        plt.close(fig)
        written.append(path)

    if SIZE_FACTOR in analysis.factors:
        save(learning_curve(analysis), "learning_curve.png")
    for factor in analysis.factors:
        save(factor_plot(analysis, factor), f"{analysis.metric}_vs_{factor}.png")
    if analysis.best_run is not None:
        predictions = artifacts.predictions(analysis.best_run.run_id)
        if predictions is not None:
            names = label_names(predictions)
            index = {n: i for i, n in enumerate(names)}
            fig = confusion_matrix_figure(
                predictions.gold.map(index).to_numpy(),
                predictions.predicted.map(index).to_numpy(),
                names,
            )
            fig.axes[0].set_title(
                f"Confusion matrix (test), best run\n{analysis.best_run.run_name}", fontsize=9
            )
            fig.tight_layout()
            save(fig, "confusion_matrix_best.png")
    if analysis.importances:
        save(importance_plot(analysis.importances), "optuna_importances.png")
    return written


def numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def learning_curve(analysis: Analysis) -> Any:
    """Test metric (mean ± CI over seeds) against training-set size, one line per arm."""
    metric = analysis.metric
    arms = [f for f in analysis.factors if f != SIZE_FACTOR]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    jobs = analysis.runs.jobs
    for key, idx in stats.group_runs(jobs, arms):
        sub = jobs.loc[idx]
        points = [
            (k[0], stats.t_interval(sub.loc[i, metric], analysis.confidence))
            for k, i in stats.group_runs(sub, [SIZE_FACTOR])
            if k[0] is not None
        ]
        if not points:
            continue
        x = [p[0] for p in points]
        y = [p[1].mean for p in points]
        err = [0 if math.isnan(p[1].half_width) else p[1].half_width for p in points]
        label = ", ".join(level_name(f, v) for f, v in zip(arms, key, strict=True)) or "all"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
    if numeric([v for v in jobs[SIZE_FACTOR] if v is not None]):
        ax.set_xscale("log")
    ax.set_xlabel("training-set size (data.max_train)")
    ax.set_ylabel(f"test {metric_title(metric)}")
    ax.set_title(f"Learning curves (mean ± {100 * analysis.confidence:g} % CI over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def factor_plot(analysis: Analysis, factor: str) -> Any:
    """Every run's test metric against one factor, coloured by the compared factor."""
    metric = analysis.metric
    jobs = analysis.runs.jobs
    others = [f for f in analysis.factors if f != factor]
    color_by: str | None = analysis.compare if analysis.compare in others else None
    if color_by is None and others:
        color_by = others[0]
    levels = [k[0] for k, _ in stats.group_runs(jobs, [factor])]
    is_numeric = numeric([v for v in levels if v is not None]) and None not in levels
    position = {lv: (lv if is_numeric else i) for i, lv in enumerate(levels)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = stats.group_runs(jobs, [color_by]) if color_by else [((None,), jobs.index)]
    rng = streams.rng(0, streams.Stream.report_jitter)
    for n, ((colour,), idx) in enumerate(series):
        sub = jobs.loc[idx]
        label = level_name(color_by, colour) if color_by else "runs"
        x = np.array([position[stats.cell_key(v)] for v in sub[factor]])
        jitter = 0 if is_numeric else rng.uniform(-0.08, 0.08, len(x))
        colour_rgb = f"C{n}"
        ax.scatter(x + jitter, sub[metric], alpha=0.45, s=18, color=colour_rgb)
        means = [
            (position[k[0]], stats.t_interval(sub.loc[i, metric], analysis.confidence).mean)
            for k, i in stats.group_runs(sub, [factor])
        ]
        ax.plot(*zip(*means, strict=True), marker="D", color=colour_rgb, label=label)
    if is_numeric:
        positive = [v for v in levels if v > 0]
        if len(positive) == len(levels) and max(levels) / min(levels) >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(levels)), [fmt(v) for v in levels], rotation=20)
    averaged = [f for f in others if f != color_by]
    note = " (means over " + ", ".join(averaged) + ")" if averaged else ""
    ax.set_xlabel(factor)
    ax.set_ylabel(f"test {metric_title(metric)}")
    ax.set_title(f"test {metric_title(metric)} vs {factor}{note}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_plot(importances: dict[str, float]) -> Any:
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names])
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("Optuna parameter importances")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- terminal


def terminal_summary(
    analysis: Analysis, out_dir: Path, written: Sequence[Path], parent: str | None
) -> None:
    """The cells, the verdicts and the runs left out, as rich tables."""
    from rich.console import Console
    from rich.table import Table as RichTable

    # Logs and pipes get a wide page instead of rich's 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    counts = state_counts(analysis)
    console.rule(f"[bold]{analysis.runs.experiment}")
    console.print(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no runs")
    shown = ["accuracy", "micro_f1", "macro_f1", "weighted_f1"]
    table = RichTable(title="test metrics: mean ± CI over distinct seeds")
    for f in analysis.factors:
        table.add_column(f)
    table.add_column("seeds", justify="right")
    for m in shown:
        table.add_column(metric_title(m), justify="right")
    for cell in analysis.cells:
        style = "bold green" if cell is analysis.best else None
        values = [fmt(v) for v in cell.key]
        table.add_row(
            *values, str(len(cell.runs)), *(cell.intervals[m].format() for m in shown), style=style
        )
    console.print(table)
    if analysis.comparisons:
        others = [f for f in analysis.factors if f != analysis.compare]
        comp = RichTable(
            title=f"{analysis.compare}: t-test over seeds, Holm-adjusted, Δ test {analysis.metric}"
        )
        for h in [*others, "A", "B", "seeds", "Δ (B−A)", "CI", "p", "p (Holm)", "MDE", "verdict"]:
            comp.add_column(h)
        for c in analysis.comparisons:
            comp.add_row(
                *(fmt(c.stratum[f]) for f in others),
                fmt(c.a),
                fmt(c.b),
                str(c.test.n_seeds),
                f"{c.test.delta:+.4f}",
                interval_text(c),
                fmt_p_or_none(c.test.p_value),
                fmt_p_or_none(c.p_adjusted),
                fmt_effect(c.mde),
                c.verdict,
            )
        console.print(comp)
    excluded = analysis.runs.excluded
    if not excluded.empty:
        left = RichTable(title=f"{len(excluded)} run(s) not in the tables", style="yellow")
        for h in ("run", "state", "reason"):
            left.add_column(h)
        for _, row in excluded.iterrows():
            left.add_row(str(row.run_id)[:12], str(row.state), str(row.reason))
        console.print(left)
    console.print(f"report: {out_dir / 'report.md'} and report.html ({len(written)} files)")
    if parent:
        console.print(f"logged to parent run {parent} under report/")


def write_report(analysis: Analysis, artifacts: Artifacts, out_dir: Path) -> list[Path]:
    """report.md, report.html, summary.csv, comparisons.csv and plots/ under out_dir."""
    output_folder(out_dir)
    plots = write_plots(analysis, artifacts, out_dir / "plots")
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    md_path = write_text(out_dir / "report.md", markdown(analysis, plots, out_dir, generated))
    html_path = write_text(out_dir / "report.html", html(analysis, plots, out_dir, generated))
    summary = write_text(out_dir / "summary.csv", summary_frame(analysis).to_csv(index=False))
    comparisons = write_text(
        out_dir / "comparisons.csv", comparisons_frame(analysis).to_csv(index=False)
    )
    return [md_path, html_path, summary, comparisons, *plots]
