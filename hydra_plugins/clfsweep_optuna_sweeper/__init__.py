"""clfsweep's Optuna sweeper for Hydra (``hydra/sweeper=clfsweep_optuna``)."""

__version__ = "0.1.0"
