"""MLflow pyfunc wrapper of a saved checkpoint, logged as model code.

The checkpoint itself is a plain HF directory (config + safetensors + tokenizer + our
`clfsweep.json`) under the model's `artifacts/checkpoint/`, which
`AutoModelForSequenceClassification.from_pretrained` loads directly. Through pyfunc, texts are
encoded exactly as `python -m src.predict` does (prompt, truncation or sliding windows, task and
threshold), by the same code: the `src` package travels with the model (`code_paths`).

Input: a list, tuple, array or Series of texts, one text, or a DataFrame (or a dict) whose
`text` column holds them. The signature declares no input schema, only the parameters: MLflow
enforces a named input column before the model runs and turns a list into a column `0`, so a
schema naming `text` would refuse plain lists of texts. The column is checked here instead.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel, PythonModelContext

from src.config.errors import UserError

TEXT_COLUMN = "text"


class SequenceClassifier(PythonModel):
    """Texts in; per text the label(s) or value and the probabilities out."""

    def load_context(self, context: PythonModelContext) -> None:
        from transformers.utils import logging as transformers_logging

        from src.checkpoint.classifier import Classifier

        # In the caller's process (or the server's log): no "Loading weights" bar per load.
        shown = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            self.classifier = Classifier.load(Path(context.artifacts["checkpoint"]))
        finally:
            if shown:
                transformers_logging.enable_progress_bar()

    # MLflow infers no input schema from a DataFrame hint (from `list[str]` it would, and then
    # hand a DataFrame's first column to the model); lists and Series arrive as they are too.
    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Classify; `params` (batch_size, max_len) are those of `Classifier.__call__`."""
        try:
            return self.classifier(input_texts(model_input), **(params or {}))
        except UserError as exc:  # a bad request (HTTP 400 when served), in one line
            raise MlflowException.invalid_parameter_value(str(exc)) from None


def input_texts(model_input: object) -> list[Any]:
    """The texts of a pyfunc input, in order: the `text` column of a DataFrame or dict, the
    items of a list, tuple, array or Series, or one text."""
    if isinstance(model_input, pd.DataFrame | Mapping):
        if TEXT_COLUMN not in model_input:
            raise UserError(
                f"the input has no `{TEXT_COLUMN}` column (it has {list(model_input.keys())}): "
                f"put the texts in a column named `{TEXT_COLUMN}`, or pass a list of texts"
            )
        return input_texts(model_input[TEXT_COLUMN])
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, list | tuple | pd.Series | np.ndarray):
        return list(model_input)
    raise UserError(
        f"cannot read texts from {type(model_input).__name__} {reprlib.repr(model_input)}: pass "
        f"a list or Series of texts, or a DataFrame with a `{TEXT_COLUMN}` column"
    )


mlflow.models.set_model(SequenceClassifier())
