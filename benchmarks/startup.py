"""Trial start-up with backbone reuse against reload, in one fresh process.

A sweep trial builds its model with src.train's own call, `build_classifier` (with
`reuse_weights=True` in a multirun: the backbone's tensors are cloned from the per-process cache
`src.model.backbones.cached_weights`; otherwise read from the safetensors files), LoRA here, with
every page of the weights touched (safetensors maps files lazily); timed is
that build, what reuse changes (the tokenizer loads alike either way). The two modes are
interleaved and garbage is collected before each build; the file is in the OS page cache (a
warm disk, as from the second trial of a sweep on). The first reuse build fills the cache and
is left out, as the first trial of a sweep pays the read.

python -m benchmarks.startup --settings '<json>' --repeats 7 --out FILE
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from benchmarks.article_recipe import TARGET_MODULES
from benchmarks.common import Settings, bench_checkpoint, stopwatch


def build_trial_model(checkpoint: Path, reuse: bool, settings: Settings, tokenizer: Any) -> Any:
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
        backbone,
        tokenizer,
        preset,
        method,
        ["negative", "positive"],
        Precision.fp32,
        reuse_weights=reuse,
    )
    # safetensors maps the file: pages are read when first touched, which training does at
    # once. Touch one value per 4 KiB page so a lazy read is paid inside the timed region.
    with torch.no_grad():
        for param in built.model.parameters():
            param.reshape(-1)[:: 4096 // param.element_size()].sum()
    return built.model


def measure(settings: Settings, repeats: int) -> dict[str, Any]:
    """Median seconds of a trial's model build in each mode."""
    from src.config.schema import Arch
    from src.model.backbones import WEIGHT_READS, Backbone, load_tokenizer

    checkpoint = bench_checkpoint(settings)
    tokenizer = load_tokenizer(Backbone(checkpoint, Arch.decoder, False))
    build_trial_model(checkpoint, True, settings, tokenizer)  # fills the cache
    times: dict[str, list[float]] = {"reuse": [], "reload": []}
    for _ in range(repeats):
        for mode in times:  # interleaved: drift hits both modes alike
            gc.collect()
            with stopwatch() as t:
                build_trial_model(checkpoint, mode == "reuse", settings, tokenizer)
            times[mode].append(t["s"])
    medians = {mode: statistics.median(values) for mode, values in times.items()}
    return {
        "reuse_s": medians["reuse"],
        "reload_s": medians["reload"],
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
