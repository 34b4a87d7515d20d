"""MLflow pyfunc wrapper of a saved checkpoint, logged as model code.

The checkpoint itself is a plain HF directory (config + safetensors + tokenizer + our
`clfsweep.json`) under the model's `artifacts/checkpoint/`, which
`AutoModelForSequenceClassification.from_pretrained` loads directly. Through pyfunc, texts are
encoded exactly as `python -m src.predict` does (prompt, truncation or sliding windows, task and
threshold), by the same code: the `src` package travels with the model (`code_paths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel, PythonModelContext


class SequenceClassifier(PythonModel):
    """Texts in; per text the label(s) or value and the probabilities out."""

    def load_context(self, context: PythonModelContext) -> None:
        from src.checkpoint.classifier import Classifier

        self.classifier = Classifier.load(Path(context.artifacts["checkpoint"]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: list[str],
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        max_len = (params or {}).get("max_len")
        return self.classifier(list(model_input), max_len=int(max_len) if max_len else None)


mlflow.models.set_model(SequenceClassifier())
