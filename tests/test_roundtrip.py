"""Round trip: the saved checkpoint reproduces the trained in-memory model's logits (fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import set_seed

from src.checkpoint.files import CheckpointInfo, load_checkpoint, write_checkpoint
from src.config.schema import Arch, MethodConfig, ModelConfig, TinyArchConfig
from src.data.sources import load_splits
from src.model.backbones import Backbone, load_classifier, load_tokenizer
from src.model.methods import apply_method, export_model
from src.model.tiny import materialize_tiny
from src.training.inference import predict_logits, tokenize
from src.training.trainer import TokenizedDataset

TEXTS = ["这基金表现也太差了吧,买了半年了还亏着呢。", "管理团队超级专业,让人放心。", "一般般吧"]


@pytest.mark.parametrize("family", ["qwen2", "bert"])
@pytest.mark.parametrize("method", ["lora", "sft", "head_only", "ia3", "loraplus"])
def test_reloaded_checkpoint_gives_the_same_logits(family, method, tmp_path: Path) -> None:
    from src.config.schema import DataConfig

    splits = load_splits(DataConfig(name="fund_reviews"), seed=0)
    tiny = TinyArchConfig(family=family, vocab_size=300)
    path = materialize_tiny(tiny, splits.train.text.tolist(), tmp_path / "tiny")
    backbone = Backbone(path, Arch.encoder if family == "bert" else Arch.decoder, False)
    preset = ModelConfig(
        name="tiny",
        arch=backbone.arch,
        lora_target_modules=["query", "value"] if family == "bert" else ["q_proj", "v_proj"],
    )
    set_seed(0)
    tokenizer = load_tokenizer(backbone)
    model = load_classifier(backbone, tokenizer, ["负向", "正向"], torch.float32, "sdpa")
    model = apply_method(model, MethodConfig(name=method, rank=4), preset)
    # Move trained weights away from their initial values, as training would.
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    encodings = tokenize(TEXTS, tokenizer, max_len=32)
    expected, _ = predict_logits(model, tokenizer, encodings, batch_size=2)

    saved = write_checkpoint(export_model(model), tokenizer, tmp_path / "ckpt", CheckpointInfo())
    reloaded, reloaded_tokenizer, _ = load_checkpoint(saved)
    assert tokenize(TEXTS, reloaded_tokenizer, max_len=32) == encodings
    actual, _ = predict_logits(reloaded, reloaded_tokenizer, encodings, batch_size=3)
    assert torch.allclose(torch.from_numpy(actual), torch.from_numpy(expected), atol=1e-5)
    assert not (expected[:, 0] == expected[:, 1]).all(), "a degenerate head proves nothing"


def test_length_sorted_batches_return_logits_in_input_order(tmp_path: Path) -> None:
    texts = ["短", "这是一条比较长的评论,用来检查排序后的顺序能否恢复。", "中等长度的评论"]
    path = materialize_tiny(TinyArchConfig(family="qwen2", vocab_size=300), texts * 5, tmp_path)
    backbone = Backbone(path, Arch.decoder, False)
    tokenizer = load_tokenizer(backbone)
    model = load_classifier(backbone, tokenizer, ["a", "b"], torch.float32, "sdpa")
    encodings = tokenize(texts, tokenizer, max_len=64)
    batched, _ = predict_logits(model, tokenizer, encodings, batch_size=2)
    one_by_one = [predict_logits(model, tokenizer, [ids], batch_size=1)[0][0] for ids in encodings]
    assert torch.allclose(torch.from_numpy(batched), torch.tensor(one_by_one), atol=1e-5)
    assert TokenizedDataset(encodings).lengths() == [len(ids) for ids in encodings]
