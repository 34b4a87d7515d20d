"""Backbones and methods (conf/model, conf/method): load, build, estimate the memory of."""
