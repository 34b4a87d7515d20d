"""What a run prints: one line per epoch, one progress display over the training steps, the
result table at the end; and the libraries kept quiet where what they print is noise.

Every line goes through `logging`, so Hydra's job log file (`<run dir>/train.log`) holds the
same lines as the console; the progress bar alone is terminal-only.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import mlflow

log = logging.getLogger("clfsweep")

# Library messages nobody can act on, by the logger that emits them, with why each is noise.
UNACTIONABLE_LOGS = {
    "transformers.modeling_utils": (
        "LOAD REPORT",  # the classification head is new by design: reported "MISSING"
        # src.pretrain from a checkpoint without BERT's masked-LM head: new by design too
        "tie cls.predictions.bias to cls.predictions.decoder.bias, but both are absent",
    ),
    # src.pretrain's best epoch reloaded: the masked-LM decoder is tied to the embeddings and to
    # cls.predictions.bias, so it is never saved, and the tie restores it.
    "transformers.trainer": (
        "missing keys in the checkpoint model loaded: ['cls.predictions.decoder.weight', "
        "'cls.predictions.decoder.bias']",
    ),
    "transformers.trainer_utils": (
        "new PAD/BOS/EOS tokens",  # decoders get their pad token from us, on purpose
        "mtime may not be reliable",  # the Trainer's checkpoint rotation on some filesystems
    ),
}
UNACTIONABLE_WARNINGS = (
    ".*is_gradient_checkpointing.*",  # raised inside transformers' own code, not ours
)
PERIODIC_LINES = 10  # without a terminal: a progress line every tenth of the steps
# Tables printed to a pipe (CI logs, `| tee`): rich would cut them to 80 columns, and a
# multirun's swept columns to `…`; a table is only as wide as its cells need.
PIPED_WIDTH = 240


class ConsoleFormatter(logging.Formatter):
    """`12:03:07 message` on the console; warnings and errors also name their level."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            time_part, _, message = text.partition(" ")
            return f"{time_part} {record.levelname}: {message}"
        return text


class _DropMessages(logging.Filter):
    """Drops records whose message contains one of the given texts."""

    def __init__(self, texts: Sequence[str]) -> None:
        super().__init__()
        self.texts = tuple(texts)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.texts)


def quiet_libraries() -> None:
    """Before transformers and MLflow are imported: no progress bars of theirs (ours is the one
    display), no INFO chatter from MLflow's store, no warnings a user cannot act on."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' own bars
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # its fork warning, after a fork
    for pattern in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, texts in UNACTIONABLE_LOGS.items():  # a filter acts on its own logger's records
        logging.getLogger(name).addFilter(_DropMessages(texts))


def epoch_line(metric: str, epochs: int) -> Callable[[int, dict[str, float]], None]:
    """An epoch hook printing `epoch 2/3  train loss 0.6912  eval_macro_f1 0.7321  accuracy
    0.7400  12.3 s`, the time counted from the first epoch's start."""
    start = time.monotonic()

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        parts = [f"epoch {epoch}/{epochs}"]
        if "train_loss" in metrics:
            parts.append(f"train loss {metrics['train_loss']:.4f}")
        if metric in metrics:
            parts.append(f"{metric} {metrics[metric]:.4f}")
        if "eval_accuracy" in metrics and metric != "eval_accuracy":
            parts.append(f"accuracy {metrics['eval_accuracy']:.4f}")
        parts.append(f"{time.monotonic() - start:.1f} s")
        log.info("  ".join(parts))

    return hook


class StepProgress:
    """A progress bar over the training steps on a terminal; plain periodic log lines
    (`step 40/400 (10%), 3.2 s`) when stderr is a file or a pipe (batch jobs, CI)."""

    def __init__(self, total: int, terminal: bool | None = None) -> None:
        self.total = max(total, 1)
        self.start = time.monotonic()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar: Any = None
        if self.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="training", unit="step", leave=False)
        self.next_line = self.total / PERIODIC_LINES

    def update(self, step: int) -> None:
        """The optimizer step just finished."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
        elif step >= self.next_line or step == self.total:
            elapsed = time.monotonic() - self.start
            log.info(f"step {step}/{self.total} ({step / self.total:.0%}), {elapsed:.1f} s")
            while self.next_line <= step:
                self.next_line += self.total / PERIODIC_LINES

    def close(self) -> None:
        """The bar leaves the terminal clean for the epoch lines and the table."""
        if self.bar is not None:
            self.bar.close()


def print_run(run_id: str) -> None:
    """One run's row of the result table, titled with its name and id."""
    import mlflow

    run = mlflow.get_run(run_id)
    print_runs([run], f"{run.info.run_name} ({run.info.run_id})")


def print_runs(
    runs: Sequence[mlflow.entities.Run],
    title: str,
    multirun: mlflow.entities.Run | None = None,
) -> None:
    """The result table of runs (one, or the children of a multirun's parent run), to stdout."""
    from rich.console import Console

    from src.tracking.run_table import runs_table

    width = None if sys.stdout.isatty() else PIPED_WIDTH
    Console(width=width).print(runs_table(runs, title, multirun))
