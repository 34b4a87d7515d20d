"""A terminal table of the latest multirun (grid or sweep) of an experiment.

python -m src.summary --experiment demo
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from src.cli.boundary import ArgumentParser, command
from src.tracking.console import PIPED_WIDTH, quiet_libraries
from src.tracking.stores import store_to_read
from src.tracking.uris import redact


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    parser = ArgumentParser(prog="python -m src.summary", description=__doc__.split("\n")[0])
    parser.add_argument("--experiment", default="clfsweep")
    parser.add_argument("--tracking-uri")
    args = parser.parse_args(argv)
    uri = store_to_read(args.tracking_uri)  # before MLflow loads
    quiet_libraries()
    from src.tracking.run_table import latest_multirun, runs_table

    console = Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)
    multirun, runs = latest_multirun(uri, args.experiment)
    console.print(runs_table(runs, f"{args.experiment}: {len(runs)} runs", multirun))
    # soft_wrap: the command stays one line, to paste
    console.print(
        f"Compare every run, curve and artifact in the MLflow UI: {ui_hint(uri)}", soft_wrap=True
    )
    return 0


def ui_hint(uri: str) -> str:
    """Where to see the runs of the store `uri` in the MLflow UI: a server's own address, or
    the command that serves this store on 127.0.0.1 (MLflow's own script, by its path)."""
    if uri.startswith(("http://", "https://")):
        return redact(uri)
    installed = Path(sys.executable).parent / "mlflow"
    mlflow_ui = [str(installed) if installed.exists() else "mlflow", "ui", "--host", "127.0.0.1"]
    command = shlex.join([*mlflow_ui, "--port", "5000", "--backend-store-uri", redact(uri)])
    return f"{escape(command)} → http://127.0.0.1:5000"


if __name__ == "__main__":
    raise SystemExit(main())
