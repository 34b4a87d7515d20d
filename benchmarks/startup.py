"""Trial start-up with backbone reuse against reload, in one fresh process.

A sweep trial builds its model with src.train's own calls: `load_tokenizer`, `load_classifier`
(with `reuse_weights=True` in a multirun: the backbone's tensors come from the per-process cache
`src.models.cached_weights`, cloned; otherwise they are read from the safetensors files) and
`apply_method` (LoRA). The first reuse trial fills the cache and is left out, as the first
trial of a sweep pays the read. Reads come from the OS page cache either way (a warm disk).

python -m benchmarks.startup --settings '<json>' --repeats 7 --out FILE
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.article_recipe import TARGET_MODULES
from benchmarks.common import Settings, bench_checkpoint, stopwatch


def build_trial_model(checkpoint: Path, reuse: bool, settings: Settings) -> Any:
    """What src.train.build_model does for a LoRA trial (without the MLflow logging)."""
    from src.config import Arch, MethodConfig, ModelConfig
    from src.methods import apply_method
    from src.models import Backbone, load_classifier, load_tokenizer

    backbone = Backbone(path=checkpoint, arch=Arch.decoder, trust_remote_code=False)
    tokenizer = load_tokenizer(backbone)
    model = load_classifier(
        backbone,
        tokenizer,
        ["negative", "positive"],
        torch.float32,
        "sdpa",
        reuse_weights=reuse,
    )
    method = MethodConfig(name="lora", rank=settings.rank, dropout=settings.dropout)
    preset = ModelConfig(
        name="tiny_qwen2",
        arch=Arch.decoder,
        lora_target_modules=list(TARGET_MODULES),
    )
    return apply_method(model, method, preset)


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    """Median seconds of a trial's model build, reusing and re-reading the backbone."""
    from src.models import WEIGHT_READS

    checkpoint = bench_checkpoint(settings)
    build_trial_model(checkpoint, reuse=True, settings=settings)  # fills the cache
    build_trial_model(checkpoint, reuse=False, settings=settings)  # warms the page cache
    times: dict[str, list[float]] = {"reuse": [], "reload": []}
    for _ in range(repeats):
        for mode in ("reuse", "reload"):  # interleaved: drift hits both alike
            with stopwatch() as t:
                build_trial_model(checkpoint, reuse=mode == "reuse", settings=settings)
            times[mode].append(t["s"])
    reuse, reload = statistics.median(times["reuse"]), statistics.median(times["reload"])
    return {
        "reuse_s": reuse,
        "reload_s": reload,
        "reload_over_reuse": reload / reuse,
        "weight_reads": dict(WEIGHT_READS),
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
