"""Classify texts with a trained checkpoint: one text per line in, JSON Lines out.

python -m src.predict --run-id RUN_ID --input texts.txt > predictions.jsonl
echo "退钱,什么辣鸡基金" | python -m src.predict --model models:/m-...
python -m src.predict --model models:/<study name>@champion --input texts.txt   # a sweep's best
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from src.errors import ArgumentParser, UserError, command, regular_file, writable_place
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
    parser.add_argument("--input", type=Path, help="text file, one text per line (default: stdin)")
    parser.add_argument("--output", type=Path, help="JSONL output (default: stdout)")
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


def read_texts(stream: Iterable[bytes], name: str) -> list[str]:
    """Decode UTF-8 lines; an undecodable or empty line is an error naming the line."""
    texts = []
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{name} line {number} is not UTF-8 ({exc.reason}): re-encode the file as UTF-8"
            ) from exc
        if not line.strip():
            raise UserError(f"{name} line {number} is empty: give one non-empty text per line")
        texts.append(line)
    if not texts:
        raise UserError(f"{name} holds no texts: give one text per line")
    return texts


def check_output(path: Path) -> None:
    """--output must be a file that can be written, found before any text is classified."""
    if path.is_dir():
        raise UserError(
            f"--output {path} is a directory: give a file name, e.g. {path / 'out.jsonl'}"
        )
    if not path.parent.is_dir():
        raise UserError(
            f"--output {path}: the folder {path.parent} does not exist; create it first"
        )
    if not writable_place(path.parent) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--output {path} cannot be written: choose a writable place")


def write_jsonl(rows: list[dict], out: TextIO) -> None:
    """One JSON object per line, Chinese kept readable."""
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


@command
def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    args = parse_args(argv)
    # The arguments are checked before MLflow, torch and transformers load (seconds).
    uri = store_to_read(args.tracking_uri) if args.run_id or ":/" in (args.model or "") else None
    if args.input is not None:
        regular_file(args.input, "--input")
    if args.output is not None:
        check_output(args.output)
    import mlflow

    from src.checkpoint.classifier import classify
    from src.checkpoint.locate import resolve_model_dir

    if uri is not None:  # a local folder needs no store
        mlflow.set_tracking_uri(uri)
    model_dir = resolve_model_dir(args.run_id, args.model)
    if args.input is not None:
        with args.input.open("rb") as stream:
            texts = read_texts(stream, str(args.input))
    else:
        texts = read_texts(sys.stdin.buffer, "stdin")
    rows = classify(model_dir, texts, args.batch_size, args.max_len)
    if args.output is not None:
        # Written beside the target, then renamed: an interrupted write never leaves half a file.
        staging = args.output.with_name(f".{args.output.name}.partial")
        with staging.open("w", encoding="utf-8") as out:
            write_jsonl(rows, out)
        staging.replace(args.output)
    else:
        write_jsonl(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
