"""A terminal table of the latest multirun (grid or sweep) of an experiment.

python -m src.summary --experiment demo
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console

from src.errors import ArgumentParser, command
from src.tracking.console import quiet_libraries
from src.tracking.stores import store_to_read


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = ArgumentParser(prog="python -m src.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="clfsweep")
    parser.add_argument("--tracking-uri")
    args = parser.parse_args(argv)
    uri = store_to_read(args.tracking_uri)  # before MLflow loads
    quiet_libraries()
    import mlflow

    from src.analysis.summary import latest_children, runs_table

    client = mlflow.MlflowClient(uri)
    # Piped output (CI logs, `| tee`) would otherwise be cut to 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 140)
    runs = latest_children(client, args.experiment)
    console.print(runs_table(runs, f"{args.experiment}: {len(runs)} runs"))
    console.print(
        "Compare every run, curve and artifact in the MLflow UI: [bold]make ui[/] → http://127.0.0.1:5000"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
