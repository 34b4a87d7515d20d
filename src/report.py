"""The answer to the question a sweep was run for: tables, verdicts and plots from MLflow runs.

    python -m src.report --experiment c3_base_vs_instruct_by_size
    python -m src.report --experiment c4_lora_vs_sft_by_size_cpu --tracking-uri sqlite:///x.db
    make report EXPERIMENT=c3_base_vs_instruct_by_size

Reads the experiment's runs with `mlflow.search_runs`, groups them by the swept factors (run
params that vary, seed excluded), and writes to sweeps/<experiment>/report/: report.md and
report.html (the article's metrics, each cell mean ± 95 % t-interval over its distinct seeds
and the difference those seeds can resolve; the per-class table of the best configuration; the
claim factor's comparisons with a verdict: a paired t-test over per-seed differences,
Holm-adjusted over the section, docs/statistics.md), summary.csv, comparisons.csv and
plots/*.png. The report is also logged to the sweep's parent run. Failed, pruned, unfinished
and repeated (same configuration and seed) runs are counted and listed, never dropped silently.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from src.analysis import stats
from src.cli.boundary import ArgumentParser, command
from src.tracking.console import quiet_libraries
from src.tracking.stores import store_to_read

if TYPE_CHECKING:  # MLflow and the analysis load after the arguments parse: `--help` is fast
    from src.analysis.runs import Runs

log = logging.getLogger(__name__)


def log_to_parent(runs: Runs, requested: str | None, out_dir: Path) -> str | None:
    """Log the report folder to the parent run (the given one, else the sweep's latest)."""
    parent = requested
    if parent is None:
        known = set(runs.jobs.parent.dropna()) | set(runs.excluded.parent.dropna())
        candidates = runs.parents[runs.parents.run_id.isin(known)]
        parent = str(candidates.run_id.iloc[-1]) if len(candidates) else None
    if parent is None:
        log.warning("no parent run found: the report is not logged to MLflow")
        return None
    from src.tracking.record import log_to_run

    log_to_run(runs.uri, parent, out_dir, "report")
    return parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = ArgumentParser(
        prog="python -m src.report",
        description="Tables (mean ± 95% CI over seeds), verdicts over seeds (t-test, Holm) "
        "and plots of a sweep's MLflow runs, written to sweeps/<experiment>/report/.",
    )
    p.add_argument("--experiment", required=True, help="MLflow experiment (the preset's name)")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db")
    p.add_argument("--parent-run-id", help="only the child runs of this sweep (parent run)")
    p.add_argument(
        "--metric",
        default="macro_f1",
        choices=stats.BOOTSTRAP_METRICS,
        help="test metric that picks the best configuration and is compared (default macro_f1)",
    )
    p.add_argument("--compare", help="the factor to compare (default: the claim's factor)")
    p.add_argument("--out", type=Path, help="default: sweeps/<experiment>/report")
    p.add_argument(
        "--n-boot",
        type=int,
        default=2000,
        help="bootstrap replicates of a one-seed comparison's test-example interval (2000)",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        help="interval level (0.95); verdicts use α = 1 minus it",
    )
    p.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    args = p.parse_args(argv)
    if not 0 < args.confidence < 1:
        p.error(f"--confidence={args.confidence} must lie strictly between 0 and 1")
    if args.n_boot < 100:
        p.error(f"--n-boot={args.n_boot} must be at least 100")
    return args


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Build, write, log and summarise the report; 1 when no run completed."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    uri = store_to_read(args.tracking_uri)  # before MLflow and the analysis load
    quiet_libraries()
    from src.analysis import render
    from src.analysis.compare import analyse
    from src.analysis.render import write_report
    from src.analysis.runs import Artifacts, load_runs

    out_dir = args.out or Path("sweeps") / args.experiment / "report"
    runs = load_runs(uri, args.experiment, args.parent_run_id, args.metric)
    artifacts = Artifacts(uri)
    analysis = analyse(runs, artifacts, args.metric, args.compare, args.n_boot, args.confidence)
    written = write_report(analysis, artifacts, out_dir)
    parent = None if args.no_log else log_to_parent(runs, args.parent_run_id, out_dir)
    render.terminal_summary(analysis, out_dir, written, parent)
    return 0 if analysis.cells else 1


if __name__ == "__main__":
    raise SystemExit(main())
