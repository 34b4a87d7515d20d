"""Classify texts with a trained checkpoint: one text per line in, JSON Lines out.

python -m src.predict --run-id RUN_ID --input texts.txt > predictions.jsonl
echo "退钱,什么辣鸡基金" | python -m src.predict --model models:/m-...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

import mlflow
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from src.checkpoint import CheckpointInfo, load_checkpoint, resolve_model_dir
from src.config import TaskConfig, TrackingConfig
from src.errors import UserError
from src.long_text import InputSpec, encode
from src.tasks import make_task
from src.tracking import tracking_uri
from src.training import predict_logits

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m src.predict", description=__doc__.split("\n")[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="MLflow run whose logged model to use")
    source.add_argument("--model", help="MLflow model URI (models:/..., runs:/...) or a local dir")
    parser.add_argument("--input", type=Path, help="text file, one text per line (default: stdin)")
    parser.add_argument("--output", type=Path, help="JSONL output (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--max-len", type=int, help="default: the max_len the model was trained with"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or mlruns/)"
    )
    return parser.parse_args(argv)


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


@dataclass
class Classifier:
    """A loaded checkpoint that classifies texts the way its run encoded them."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: CheckpointInfo

    @classmethod
    def load(cls, model_dir: Path) -> Classifier:
        """Load a checkpoint directory (safetensors only)."""
        return cls(*load_checkpoint(model_dir))

    def __call__(
        self, texts: list[str], batch_size: int = 32, max_len: int | None = None
    ) -> list[dict]:
        """Label (labels, value) and probabilities for each text, in input order.

        Texts are encoded as in training (prompt, truncation or sliding windows, whose logits
        are aggregated per text); the task and its threshold come from the checkpoint metadata.
        """
        info = self.info
        spec = InputSpec(**info.inputs) if info.inputs else InputSpec(max_len=info.max_len)
        encoded = encode(texts, self.tokenizer, replace(spec, max_len=max_len or spec.max_len))
        logits, _ = predict_logits(self.model, self.tokenizer, encoded.inputs, batch_size)
        id2label: dict[int, str] = dict(self.model.config.id2label or {})  # type: ignore[assignment]
        labels = [id2label[i] for i in range(len(id2label))]
        task = make_task(TaskConfig(name=info.task, threshold=info.threshold), labels)
        answers = task.answers(encoded.aggregate(logits))
        return [{"text": text} | answer for text, answer in zip(texts, answers, strict=True)]


def classify(model_dir: Path, texts: list[str], batch_size: int, max_len: int | None) -> list[dict]:
    """Classify texts with the checkpoint in `model_dir`."""
    return Classifier.load(model_dir)(texts, batch_size, max_len)


def write_jsonl(rows: list[dict], out: TextIO) -> None:
    """One JSON object per line, Chinese kept readable."""
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; user errors print one line and exit 2."""
    args = parse_args(argv)
    try:
        mlflow.set_tracking_uri(tracking_uri(TrackingConfig(uri=args.tracking_uri, dir="mlruns")))
        if args.input is not None and not args.input.is_file():
            raise UserError(f"--input {args.input} does not exist")
        model_dir = resolve_model_dir(args.run_id, args.model)
        if args.input is not None:
            with args.input.open("rb") as stream:
                texts = read_texts(stream, str(args.input))
        else:
            texts = read_texts(sys.stdin.buffer, "stdin")
        rows = classify(model_dir, texts, args.batch_size, args.max_len)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.output is not None:
        with args.output.open("w", encoding="utf-8") as out:
            write_jsonl(rows, out)
    else:
        write_jsonl(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
