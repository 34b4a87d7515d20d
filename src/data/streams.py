"""The seeded random streams of the pipeline, one per draw, so that adding or changing one draw
never shifts another's: every generator is `rng(seed, stream)`, never a bare default_rng."""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Stream(IntEnum):
    """Which draw a generator serves (the values are part of every run's reproducibility)."""

    test_split = 1  # data: the test split carved out of train when no test file is given
    valid_split = 2  # data: the validation split, likewise
    cap_train = 10  # data.max_train: which training rows are kept
    cap_valid = 11  # data.max_eval
    cap_test = 12  # data.max_test
    mix_sample = 20  # data.mix: which auxiliary rows are drawn
    mix_order = 21  # data.mix: the order of main and auxiliary rows
    few_shot = 30  # prompt=few_shot: the examples
    noise_fold_valid = 40  # src.noise's model scorer: each fold's validation tenth (sub: fold)
    report_bootstrap = 50  # src.report: the resampling of its significance tests
    report_jitter = 51  # src.report: where a plot's points scatter around their level


def rng(seed: int, stream: Stream, sub: int | None = None) -> np.random.Generator:
    """The generator of one stream (and of one of its parts, e.g. a fold) for a run's seed."""
    key = [seed % 2**64, int(stream)] + ([sub] if sub is not None else [])
    return np.random.default_rng(key)
