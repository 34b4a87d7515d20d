"""clfsweep's grid sweeper for Hydra (``hydra/sweeper=clfsweep_grid``, src.train's default)."""
