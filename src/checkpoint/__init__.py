"""The exported model: checkpoint files, where to find one, classify with it, MLflow pyfunc."""
