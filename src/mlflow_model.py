"""MLflow pyfunc wrapper of a saved sequence-classification checkpoint (logged as model code).

Self-contained on purpose: MLflow copies this file into every logged model, and loading the model
must not need this project installed. The checkpoint itself is a plain HF directory
(config + safetensors + tokenizer) under the model's `artifacts/checkpoint/`, which
`AutoModelForSequenceClassification.from_pretrained` loads directly.
"""

from __future__ import annotations

from typing import Any

import mlflow
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext
from transformers import AutoModelForSequenceClassification, AutoTokenizer


class SequenceClassifier(PythonModel):
    """Texts in (a `text` column or a list of strings); label and probabilities out."""

    def load_context(self, context: PythonModelContext) -> None:
        path = context.artifacts["checkpoint"]
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True)
        self.model.eval()

    def predict(
        self,
        context: PythonModelContext,
        model_input: list[str],
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        texts = list(model_input)
        max_len = int((params or {}).get("max_len", 512))
        rows = []
        for start in range(0, len(texts), 32):
            batch = self.tokenizer(
                texts[start : start + 32],
                truncation=True,
                max_length=max_len,
                padding=True,
                return_tensors="pt",
            )
            with torch.inference_mode():
                probs = torch.softmax(self.model(**batch).logits.float(), dim=-1)
            for row in probs.tolist():
                best = max(range(len(row)), key=row.__getitem__)
                rows.append({"label": self.model.config.id2label[best], "probabilities": row})
        return rows


mlflow.models.set_model(SequenceClassifier())
