"""One training step of a tiny classifier on each of $WORLD_SIZE gloo ranks (torchrun), sharded
by `src.model.sharding.shard` (FSDP2 by block) as src.train shards it, without the Trainer; then
its full weights gathered into an unsharded model and exported.

python -m torch.distributed.run --nproc-per-node=2 -m tests.sharded.fsdp_step OUT sft lora

For each method, rank 0 writes OUT/<method>/model (the exported checkpoint) and
OUT/<method>/logits.npy (the trained model's logits on fixed inputs, computed while it was
still sharded). One process: no sharding, the
whole batch at once: the reference.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from src.model.methods import export_model
from src.model.sharding import is_sharded, shard

BATCH = 8
LENGTH = 12


def build(method: str) -> Any:
    """The same tiny Qwen2 classifier on every rank (LoRA on every linear layer for lora)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    config = Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
        num_labels=3,
        pad_token_id=0,
    )
    model = Qwen2ForSequenceClassification(config)
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(task_type="SEQ_CLS", r=4, target_modules="all-linear")
        model = get_peft_model(model, lora)
    return model


def gathered(model: Any, method: str) -> Any:
    """The sharded model's full weights in a fresh unsharded one (a collective)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    fresh = build(method)
    fresh.load_state_dict(
        get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    )
    return fresh


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """The batch (token ids, labels), the same on every rank."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 100, (BATCH, LENGTH), generator=generator)
    return ids, torch.randint(0, 3, (BATCH,), generator=generator)


def step(out: Path, method: str, world: int, rank: int) -> None:
    """Train one step, gather, export; rank 0 writes the results."""
    ids, labels = inputs()
    model = build(method)
    if world > 1:
        shard(model)
        assert is_sharded(model)
    mine = slice(rank * BATCH // world, (rank + 1) * BATCH // world)  # this rank's share
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(input_ids=ids[mine], labels=labels[mine]).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float().numpy()
    full = gathered(model, method) if world > 1 else model
    assert not is_sharded(full)
    exported = export_model(full)
    if rank == 0:
        exported.save_pretrained(out / method / "model")
        np.save(out / method / "logits.npy", logits)


def main(out: Path, methods: list[str]) -> None:
    """Each method in turn, in one process group (processes start once: they are the cost)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    for method in methods:
        step(out, method, world, dist.get_rank() if world > 1 else 0)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
