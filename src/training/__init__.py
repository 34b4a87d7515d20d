"""Training (trainer.*): HF TrainingArguments, the Trainer, inference and evaluation."""
