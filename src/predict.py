"""Classify texts with a trained checkpoint: one text per line (or a data file's text column) in,
JSON Lines out.

python -m src.predict --run-id RUN_ID --input texts.txt > predictions.jsonl
python -m src.predict --run-id RUN_ID --input test.csv --output predictions.jsonl  # its `text`
echo "退钱,什么辣鸡基金" | python -m src.predict --model models:/m-...
python -m src.predict --model models:/<study name>@champion --input texts.txt   # a sweep's best
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from src.cli.boundary import ArgumentParser, command
from src.config.errors import UserError
from src.config.outputs import STDOUT, check_output, open_output
from src.tracking.console import quiet_libraries
from src.tracking.stores import store_to_read

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = ArgumentParser(prog="python -m src.predict", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="MLflow run whose logged model to use")
    source.add_argument(
        "--model",
        help="MLflow model URI (models:/m-..., models:/<name>@<alias>, runs:/...) or a local dir",
    )
    parser.add_argument(
        "--input",
        help="a text file, one text per line, or a .csv / .tsv / .json / .jsonl data file (its"
        " --text-column); - or none: stdin, one text per line",
    )
    parser.add_argument(
        "--text-column", default="text", help="the texts' column of a data file (default: text)"
    )
    parser.add_argument("--output", help="JSONL output (default, or -: stdout)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument(
        "--max-len", type=positive_int, help="default: the max_len the model was trained with"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"
    )
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    """An argument that counts something: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def read_texts(data: bytes, name: str) -> list[str]:
    """One text per line, as written (a line ends at \\n, \\r\\n or \\r); an empty line is an
    error naming it."""
    from src.data.tables import numbered_lines

    found = []
    for number, line in numbered_lines(data, name):
        if not line.strip():
            raise UserError(f"{name} line {number} is empty: give one non-empty text per line")
        found.append(line)
    if not found:
        raise UserError(f"{name} holds no texts: give one text per line")
    return found


def input_texts(given: str | None, column: str) -> list[str]:
    """The texts of --input: a data file's text column, a text file's lines, or stdin's lines."""
    from src.data.tables import TABLE_FORMATS, read_bytes, read_table, texts

    if given is None or given == "-":
        return read_texts(sys.stdin.buffer.read(), "stdin")
    if Path(given).suffix.lower() not in TABLE_FORMATS:
        return read_texts(read_bytes(given, "--input"), given)
    frame = read_table(given, "--input")
    if column not in frame.columns:
        there = ", ".join(map(str, frame.columns)) or "(none)"
        raise UserError(
            f"{given}: no column {column!r}; its columns are: {there}; choose one with"
            f" --text-column"
        )
    if frame.empty:
        raise UserError(f"{given} holds no texts: give one row per text")
    return texts(frame, column, given)


def write_jsonl(rows: list[dict], out: IO[str]) -> None:
    """One JSON object per line, Chinese kept readable."""
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    # The arguments are checked before MLflow, torch and transformers load (seconds).
    output = args.output or STDOUT
    check_output(output, "--output")
    store = store_to_read(args.tracking_uri) if args.run_id or ":/" in (args.model or "") else None
    stdin = args.input in (None, "-")  # read once the model is found: a typo shows at once
    given = [] if stdin else input_texts(args.input, args.text_column)
    quiet_libraries()
    from src.checkpoint.classifier import classify
    from src.tracking.models import resolve_model_dir

    model_dir = resolve_model_dir(args.run_id, args.model, store)
    given = input_texts(None, args.text_column) if stdin else given
    rows = classify(model_dir, given, args.batch_size, args.max_len)
    with open_output(output) as out:
        write_jsonl(rows, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
