"""Optuna studies (conf/hparams_search): the sweep loop behind hydra/sweeper=clfsweep_optuna."""
