"""Trial start-up: the first trial on a node (the backbone read from disk) against every later
trial (read from the OS page cache), in one fresh process.

A sweep trial builds its model with src.train's own call, `build_classifier`, LoRA here, with
every page of the weights touched (safetensors maps files lazily, training touches them all at
once); timed is that build. "cold" first drops the checkpoint's files from the page cache
(`posix_fadvise(DONTNEED)`, no root needed), as on a node where no trial has read them yet;
"warm" finds them there, as every later trial of any worker on the node does. The two are
interleaved and garbage is collected before each build. There is no in-process weight cache:
it cloned every tensor, which cost more than the mapped read from the page cache (this build
at 821 MB, interleaved in one process: 1.22 s cloned from the cache, 0.67 s re-read with the
old state-dict call, 0.64 s with today's `from_pretrained`; measured when it was removed).

python -m benchmarks.startup --settings '<json>' --repeats 7 --out FILE
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.article_recipe import TARGET_MODULES
from benchmarks.common import Settings, bench_checkpoint, stopwatch


def build_trial_model(checkpoint: Path, settings: Settings, tokenizer: Any) -> Any:
    """A LoRA trial's model, built by src.train's own call (`build_classifier`)."""
    from src.config.schema import Arch, MethodConfig, ModelConfig, Precision
    from src.model.backbones import Backbone
    from src.model.build import build_classifier

    backbone = Backbone(path=checkpoint, arch=Arch.decoder, trust_remote_code=False)
    method = MethodConfig(name="lora", rank=settings.rank, dropout=settings.dropout)
    preset = ModelConfig(
        name="tiny_qwen2", arch=Arch.decoder, lora_target_modules=list(TARGET_MODULES)
    )
    built = build_classifier(
        backbone, tokenizer, preset, method, ["negative", "positive"], Precision.fp32
    )
    # safetensors maps the file: pages are read when first touched, which training does at
    # once. Touch one value per 4 KiB page so a lazy read is paid inside the timed region.
    with torch.no_grad():
        for param in built.model.parameters():
            param.reshape(-1)[:: 4096 // param.element_size()].sum()
    return built.model


def drop_from_page_cache(checkpoint: Path) -> None:
    """Evict the checkpoint's weight files from the OS page cache (pages nobody maps)."""
    for file in checkpoint.glob("*.safetensors"):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    """Median seconds of a trial's model build, cold and warm."""
    from src.config.schema import Arch
    from src.model.backbones import Backbone, load_tokenizer

    checkpoint = bench_checkpoint(settings)
    tokenizer = load_tokenizer(Backbone(checkpoint, Arch.decoder, False))
    build_trial_model(checkpoint, settings, tokenizer)  # imports and first-call costs
    times: dict[str, list[float]] = {"cold": [], "warm": []}
    for _ in range(repeats):
        for mode in times:  # interleaved: drift hits both modes alike
            gc.collect()
            if mode == "cold":
                drop_from_page_cache(checkpoint)
            with stopwatch() as t:
                build_trial_model(checkpoint, settings, tokenizer)
            times[mode].append(t["s"])
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    return {
        "cold_s": medians["cold"],
        "warm_s": medians["warm"],
        "checkpoint_mb": sum(f.stat().st_size for f in checkpoint.glob("*.safetensors")) / 2**20,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", default="{}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = measure(Settings.from_json(args.settings), args.repeats)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
