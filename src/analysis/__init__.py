"""Reports of an experiment (make report): runs read back from MLflow, statistics, pages, plots."""
