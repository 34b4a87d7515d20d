"""Specification of src.inputs.long_text: truncation, sliding windows, aggregation, lengths."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from src.checkpoint.classifier import classify
from src.config.errors import UserError
from src.config.schema import DataConfig, LongText, Truncation
from src.data.sources import load_splits
from src.inputs.long_text import (
    InputSpec,
    aggregate,
    check_long_text,
    encode,
    length_stats,
    special_tokens_around,
    truncate,
    windows,
)
from src.model.tiny import train_byte_bpe, train_wordpiece
from tests.conftest import Store
from tests.levers import checkpoint_info, logged_checkpoint, predictions, train_run

PREDICTIONS = "predictions/test.csv"
TEXTS = [
    "这基金真的稳啊,买了之后收益一直挺不错的,感觉很靠谱!",
    "分红政策一会儿一个样,根本没法做财务规划。",
    "好",
    "基金经理换得太频繁了,业绩一点都不稳定,失望透顶。" * 4,
]


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A tiny decoder (byte-level BPE) or encoder (WordPiece with [CLS] / [SEP]) tokenizer."""
    train = train_byte_bpe if request.param == "bpe" else train_wordpiece
    return train(TEXTS, 300)


# --------------------------------------------------------------------------- pure functions


def test_truncation_keeps_head_tail_or_both() -> None:
    ids = list(range(10))
    assert truncate(ids, 4, Truncation.head, 2) == [0, 1, 2, 3]
    assert truncate(ids, 4, Truncation.tail, 2) == [6, 7, 8, 9]
    assert truncate(ids, 5, Truncation.head_tail, 2) == [0, 1, 7, 8, 9]
    assert truncate(ids, 3, Truncation.head_tail, 5) == [0, 1, 2]  # the budget caps the head
    assert truncate(ids, 10, Truncation.tail, 2) == ids


def test_windows_cover_every_token_with_the_given_overlap() -> None:
    ids = list(range(10))
    assert windows(ids, 4, 1) == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert windows(ids, 4, 0) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert windows(ids, 12, 3) == [ids]
    assert windows([], 4, 1) == [[]]
    long = list(range(1000))
    parts = windows(long, 64, 16)
    assert all(len(p) <= 64 for p in parts)
    assert sorted(set().union(*map(set, parts))) == long
    assert all(a[-16:] == b[:16] for a, b in itertools.pairwise(parts))


def test_aggregation_is_per_text_mean_or_max_in_any_input_order() -> None:
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.0, 5.0], [2.0, 2.0]])
    index = np.array([1, 0, 1, 1])
    mean = aggregate(logits, index, 2, "mean")
    np.testing.assert_allclose(mean, [[3.0, -2.0], [1.0, 7 / 3]])
    np.testing.assert_allclose(aggregate(logits, index, 2, "max"), [[3.0, -2.0], [2.0, 5.0]])
    one_each = aggregate(logits, np.arange(4), 4, "max")
    np.testing.assert_allclose(one_each, logits)
    values = aggregate(np.array([1.0, 3.0, 5.0]), np.array([0, 0, 1]), 2, "mean")
    np.testing.assert_allclose(values, [2.0, 5.0])  # one regression output per input


def test_length_stats() -> None:
    stats = length_stats(np.array([1, 2, 3, 4, 10]), budget=3)
    assert stats == pytest.approx(
        {"mean": 4.0, "p50": 3.0, "p90": 7.6, "max": 10.0, "truncated_share": 0.4}
    )
    assert length_stats(np.array([], dtype=int), 3) == {}


# --------------------------------------------------------------------------- encoding


def test_default_spec_encodes_exactly_like_plain_truncation(tokenizer) -> None:
    for max_len in (4, 16, 512):
        plain = tokenizer(TEXTS, truncation=True, max_length=max_len)["input_ids"]
        encoded = encode(TEXTS, tokenizer, InputSpec(max_len=max_len))
        assert encoded.inputs == [list(ids) for ids in plain]
        assert encoded.text_index.tolist() == [0, 1, 2, 3]


def test_special_tokens_are_found_around_a_sequence(tokenizer) -> None:
    before, after = special_tokens_around(tokenizer)
    if tokenizer.cls_token:
        assert (before, after) == ([tokenizer.cls_token_id], [tokenizer.sep_token_id])
    else:
        assert (before, after) == ([], [])


def test_the_prompt_is_never_cut_and_windows_carry_it_whole(tokenizer) -> None:
    prefix, suffix = "判断情感。文本：", "\n类别："
    before, after = special_tokens_around(tokenizer)
    head = before + tokenizer(prefix, add_special_tokens=False)["input_ids"]
    tail = tokenizer(suffix, add_special_tokens=False)["input_ids"] + after
    text_ids = tokenizer(TEXTS[3], add_special_tokens=False)["input_ids"]
    max_len = len(head) + len(tail) + 8
    for how in Truncation:
        spec = InputSpec(max_len=max_len, prefix=prefix, suffix=suffix, truncation=how.value)
        (ids,) = encode([TEXTS[3]], tokenizer, spec).inputs
        assert len(ids) == max_len
        assert ids[: len(head)] == head and ids[len(ids) - len(tail) :] == tail
        assert ids[len(head) : len(ids) - len(tail)] == truncate(text_ids, 8, how, 128)
    spec = InputSpec(max_len, prefix, suffix, long_text=LongText.sliding_window.value, stride=3)
    encoded = encode([TEXTS[3], TEXTS[2]], tokenizer, spec)
    assert encoded.budget == 8
    parts = [ids for ids, i in zip(encoded.inputs, encoded.text_index, strict=True) if i == 0]
    assert [p[len(head) : len(p) - len(tail)] for p in parts] == windows(text_ids, 8, 3)
    assert all(p[: len(head)] == head and p[len(p) - len(tail) :] == tail for p in parts)
    assert encoded.text_index.tolist()[-1] == 1 and encoded.text_tokens.tolist()[0] == len(text_ids)
    assert encoded.per_input(["a", "b"]) == ["a"] * len(parts) + ["b"]


def test_a_prompt_that_fills_max_len_or_a_stride_beyond_the_window_is_one_line(tokenizer) -> None:
    prefix = "判断这条基金评论的情感倾向" * 3
    with pytest.raises(UserError, match="leaving none for the text") as err:
        encode(TEXTS, tokenizer, InputSpec(max_len=8, prefix=prefix))
    assert "\n" not in str(err.value)
    spec = InputSpec(max_len=12, prefix="判断", long_text="sliding_window", stride=11)
    with pytest.raises(UserError, match=r"data\.stride=11 must be smaller than the \d+ tokens"):
        encode(TEXTS, tokenizer, spec)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"long_text": LongText.sliding_window, "stride": 64}, "data.stride=64 must be"),
        ({"long_text": LongText.sliding_window, "stride": -1}, "data.stride=-1 must be"),
        ({"truncation": Truncation.head_tail, "head_tokens": 64}, "data.head_tokens=64"),
        ({"truncation": Truncation.head_tail, "head_tokens": 0}, "data.head_tokens=0"),
    ],
)
def test_impossible_window_and_truncation_settings(settings: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace(".", r"\.")) as err:
        check_long_text(DataConfig(name="fund_reviews", **settings), max_len=64)
    assert "\n" not in str(err.value)


def test_stride_at_max_len_stops_the_run_before_anything_is_written(compose_cfg, tmp_path) -> None:
    from src.train import train

    cfg = compose_cfg(
        "data=fund_reviews", "data.long_text=sliding_window", "data.stride=32", "trainer.max_len=32"
    )
    with pytest.raises(UserError, match=r"data\.stride=32 must be at least 0 and smaller than"):
        train(cfg)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow  # a whole run; the windows' own tests run by default
def test_sliding_windows_train_on_windows_and_score_per_text(store: Store, tmp_path: Path) -> None:
    """tiny_bert with 16-token windows over reviews of ~30 tokens: metrics and predictions per
    review, the token-length distribution of every split, windows per text; the logged
    checkpoint predicts each review exactly as the run scored it."""
    run = train_run(
        store,
        "model=tiny_bert",
        "data=fund_reviews",
        "data.long_text=sliding_window",
        "data.stride=4",
        "data.aggregation=max",
        "trainer.max_len=16",
    )
    metrics = run.data.metrics
    for split in ("train", "valid", "test"):
        stats = {k.removeprefix(f"tokens_{split}_") for k in metrics if f"tokens_{split}_" in k}
        assert stats == {"p50", "p90", "max", "mean", "truncated_share"}
        assert metrics[f"inputs_per_text_{split}"] > 1  # reviews longer than a window
    assert metrics["tokens_test_truncated_share"] == 1.0  # 14 of 16 tokens left for text
    table = predictions(store, run, tmp_path)
    assert len(table) == 4  # one row per test review, not per window
    assert metrics["test_accuracy"] == pytest.approx((table.gold == table.predicted).mean())
    checkpoint = logged_checkpoint(store, run, tmp_path)
    inputs = checkpoint_info(checkpoint)["inputs"]
    assert (inputs["long_text"], inputs["stride"], inputs["aggregation"], inputs["max_len"]) == (
        "sliding_window",
        4,
        "max",
        16,
    )
    test = load_splits(DataConfig(name="fund_reviews"), seed=42).test
    answers = classify(checkpoint, test.text.tolist(), batch_size=3, max_len=None)
    assert [a["label"] for a in answers] == table.predicted.tolist()
    for name in ("负向", "正向"):
        np.testing.assert_allclose(
            [a["probabilities"][name] for a in answers], table[f"p_{name}"], atol=1e-5
        )
