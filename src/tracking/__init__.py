"""The run record (tracking.*): MLflow runs, their vocabulary, parent runs of multiruns."""
