"""GPU efficiency: tokens/s, MFU and peak memory of a training step, LoRA and full fine-tuning.

python -m benchmarks.gpu                       # Qwen2-0.5B and 1.5B x lora, sft x 128/512/2048
python -m benchmarks.gpu --models qwen2_0_5b --lengths 512 --compile
python -m benchmarks.gpu --smoke               # a tiny model on the CPU: checks the code path
torchrun --standalone --nproc-per-node=2 -m benchmarks.gpu --fsdp --methods sft   # sharded
torchrun --standalone --nproc-per-node=2 -m benchmarks.gpu --fsdp --smoke          # on 2 CPUs
python -m benchmarks.gpu --plan                # the article's grid placed on this node's GPUs

The tests run only `--fsdp --smoke --plan` on 2 CPU processes (the code path). The models are
the Qwen2-0.5B / Qwen2-1.5B architectures built from their config with random weights (weights
do not change speed). Each step is what the HF Trainer does
with our GPU defaults (src/training/arguments.py): bf16 autocast, the frozen backbone stored in
bf16 for LoRA (fp32 master weights for full fine-tuning), fused AdamW, gradient clipping at 1.0,
SDPA attention (flash-attn 2 when installed), random token ids without padding. The LoRA adapters
are applied by our own `src.model.methods.apply_method` (rank 16, all seven projections).

MFU = model FLOPs per second / the measured bf16 matmul peak of the card. Model FLOPs per token:
6 N for full fine-tuning (forward 2 N, backward 4 N), 4 N for LoRA (forward and the input
gradients; no weight gradients of the frozen weights), N = the non-embedding parameters; a second
column adds attention (12 L h s per token for full fine-tuning, 8 L h s for LoRA, s = sequence
length, no causal discount, as in PaLM's appendix B). Peak memory is
`torch.cuda.max_memory_allocated`, next to the pre-flight estimate of src.estimate.

`--fsdp` (under torchrun, one process per GPU): the model sharded by block with torch's
`fully_shard` as src.train shards a run (`src.model.sharding.shard`: parameters stay in their
training dtype, bf16 autocast for the matmuls, as on one GPU); tokens/s is the whole group's,
MFU against the group's peak, peak memory rank 0's against the sharded estimate
(`src.model.sharding.sharded`). `--plan`: the placement of the article's grid (`python -m
src.estimate -m ...`) on the visible GPUs, printed with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS
from src.model.memory import Plan, Shape, estimate

ARCHS: dict[str, Shape] = {
    "qwen2_0_5b": Shape("qwen2", 896, 24, 14, 2, 4864, 151936),
    "qwen2_1_5b": Shape("qwen2", 1536, 28, 12, 2, 8960, 151936),
}
SMOKE = Shape("qwen2", 64, 2, 4, 2, 128, 1000)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Result:
    model: str
    method: str
    seq_len: int
    batch_size: int
    attention: str
    compiled: bool
    tokens_per_second: float = 0.0
    step_ms: float = 0.0
    mfu: float = 0.0
    mfu_with_attention: float = 0.0
    peak_memory_gib: float = 0.0
    estimated_memory_gib: float = 0.0
    processes: int = 1  # FSDP: the ranks sharing the model
    error: str | None = None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "CPU"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...]) -> float:
    """The best measured FLOP/s of square matmuls (the denominator of MFU)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)

        def run(a: torch.Tensor = a, b: torch.Tensor = b) -> None:
            for _ in range(10):
                torch.matmul(a, b)

        seconds = timed(run, device, repeats=5) / 10
        best = max(best, 2 * n**3 / seconds)
        del a, b
    return best


def attention_kind(device: torch.device) -> str:
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def build(shape: Shape, method: str, attention: str, device: torch.device) -> Any:
    """Random-init Qwen2 classifier as our pipeline holds it for `method` (see module doc)."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    from src.config.schema import Arch, MethodConfig, ModelConfig
    from src.model.methods import apply_method

    sizes: dict[str, Any] = {
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": 32768,
        "num_labels": 2,
        "pad_token_id": 0,
        "attn_implementation": attention,
    }
    bf16 = device.type == "cuda" and method == "lora"  # frozen weights in bf16, as build_model
    with device:
        model = Qwen2ForSequenceClassification(Qwen2Config(**sizes))
    model.to(dtype=torch.bfloat16 if bf16 else torch.float32)  # type: ignore[call-arg]
    preset = ModelConfig(name="bench", arch=Arch.decoder, lora_target_modules=TARGETS)
    return apply_method(model, MethodConfig(name=method, rank=16, dropout=0.05), preset)


def world() -> tuple[int, int]:
    """(rank, processes) of this benchmark: torchrun's, else (0, 1)."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def shard(model: Any) -> None:
    """FSDP2 as src.train shards a run's model (`src.model.sharding.shard`): what is measured
    is what trains."""
    from src.model.sharding import shard as shard_run

    shard_run(model)


def train_step(
    model: Any, optimizer: Any, batch: dict[str, torch.Tensor], device: torch.device
) -> Callable[[], None]:
    """One HF-Trainer-like step: bf16 autocast forward, backward, clip, fused AdamW, zero grads."""
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def flops_per_token(shape: Shape, method: str, seq_len: int) -> tuple[float, float]:
    """(model FLOPs per token without and with attention)."""
    n = shape.layers * shape.block_params() + shape.head_params(2)
    factor = 6 if method == "sft" else 4
    attention = (factor * 2) * shape.layers * shape.hidden * seq_len
    return factor * n, factor * n + attention


def run_one(
    name: str,
    shape: Shape,
    method: str,
    seq_len: int,
    tokens_per_step: int,
    device: torch.device,
    peak: float,
    compile_model: bool,
    repeats: int,
    fsdp: bool = False,
) -> Result:
    from src.model.sharding import sharded

    batch_size = max(tokens_per_step // seq_len, 1)
    attention = attention_kind(device)
    result = Result(name, method, seq_len, batch_size, attention, compile_model)
    _, processes = world()
    plan = Plan(
        method=method,
        rank=16,
        target_modules=tuple(TARGETS),
        batch_size=batch_size,
        max_len=seq_len,
        precision="bf16" if device.type == "cuda" else "fp32",
        device=device.type,
    )
    result.estimated_memory_gib = estimate(shape, plan).total / 2**30
    if fsdp:
        result.method, result.processes = f"{method} fsdp", processes
        result.estimated_memory_gib = sharded(shape, plan, processes).total / 2**30
    model = optimizer = None
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model = build(shape, method, attention, device)
        if fsdp:
            shard(model)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
        if compile_model:
            model = torch.compile(model)
        ids = torch.randint(1, shape.vocab, (batch_size, seq_len), device=device)
        batch = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "labels": torch.randint(0, 2, (batch_size,), device=device),
        }
        step = train_step(model, optimizer, batch, device)
        step()  # compile / autotune / allocate optimizer states
        seconds = timed(step, device, repeats)
        tokens = batch_size * seq_len * processes
        per_token, per_token_attn = flops_per_token(shape, method, seq_len)
        result.step_ms = 1000 * seconds
        result.tokens_per_second = tokens / seconds
        result.mfu = per_token * tokens / seconds / (peak * processes)
        result.mfu_with_attention = per_token_attn * tokens / seconds / (peak * processes)
        if device.type == "cuda":
            result.peak_memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    except torch.OutOfMemoryError as exc:
        result.error = f"out of memory: {str(exc).splitlines()[0]}"
    except RuntimeError as exc:  # a sharding torch refuses: the prepared script goes on
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        del model, optimizer
    return result


def render(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        f"{meta['device']} · bf16 matmul peak measured {meta['peak_tflops']:.0f} TFLOP/s · "
        f"torch {meta['torch']} · transformers {meta['transformers']} · {meta['date']}",
        "",
        "| model | method | seq | batch | attention | tokens/s | step ms | MFU | MFU incl. "
        "attention | peak GiB | estimated GiB |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.error:
            lines.append(
                f"| {r.model} | {r.method} | {r.seq_len} | {r.batch_size} | {r.attention} "
                f"| {r.error} | | | | | {r.estimated_memory_gib:.1f} |"
            )
            continue
        lines.append(
            f"| {r.model} | {r.method} | {r.seq_len} | {r.batch_size} | {r.attention}"
            f"{' + compile' if r.compiled else ''} | {r.tokens_per_second:,.0f} | "
            f"{r.step_ms:.1f} | {r.mfu:.1%} | {r.mfu_with_attention:.1%} | "
            f"{r.peak_memory_gib:.1f} | {r.estimated_memory_gib:.1f} |"
        )
    return "\n".join(lines) + "\n"


ARTICLE_GRID = [
    "model=qwen2_7b_base,qwen2_7b_instruct",
    "method=lora,sft",
]


def placement_plan(device: torch.device) -> str:
    """The article's grid placed on this node's GPUs (8 H100s planned when none is visible)."""
    from src.estimate import plan_text

    gpus = torch.cuda.device_count() if device.type == "cuda" else 8
    return plan_text([*ARTICLE_GRID, f"hydra.sweeper.devices=[{','.join(map(str, range(gpus)))}]"])


def grid(args: argparse.Namespace) -> Iterator[tuple[str, Shape, str, int]]:
    models = {"smoke": SMOKE} if args.smoke else {m: ARCHS[m] for m in args.models}
    for name, shape in models.items():
        for method in args.methods:
            for seq_len in args.lengths:
                yield name, shape, method, seq_len


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--methods", nargs="+", default=["lora", "sft"], choices=["lora", "sft"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[128, 512, 2048])
    parser.add_argument("--tokens-per-step", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--smoke", action="store_true", help="tiny model, CPU, short sequences")
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (under torchrun)")
    parser.add_argument("--plan", action="store_true", help="place the article's grid here")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.fsdp:
        import os

        import torch.distributed as dist

        cuda_rank = torch.cuda.is_available() and not args.smoke
        if cuda_rank:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda_rank else "gloo")
    if args.smoke:
        args.lengths, args.tokens_per_step, args.repeats = [16, 32], 64, 2
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        raise SystemExit("no CUDA GPU visible: benchmarks/gpu.py measures GPUs (try --smoke)")
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    sizes = (4096, 8192) if cuda else (256,)
    peak = matmul_peak(device, torch.bfloat16 if cuda else torch.float32, sizes)
    import transformers

    meta = {
        "device": device_name(device),
        "peak_tflops": peak / 1e12,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "flash_attn": importlib.util.find_spec("flash_attn") is not None,
        "tokens_per_step": args.tokens_per_step,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    print(f"{meta['device']}: measured matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    results = []
    for name, shape, method, seq_len in grid(args):
        result = run_one(
            name,
            shape,
            method,
            seq_len,
            args.tokens_per_step,
            device,
            peak,
            args.compile,
            args.repeats,
            args.fsdp,
        )
        results.append(result)
        print(json.dumps(asdict(result)), flush=True)
    if world()[0] != 0:
        return  # rank 0 writes the report
    table = render(results, meta)
    if args.plan:
        table += "\n```text\n" + placement_plan(device) + "\n```\n"
    print(table)
    stem = "gpu-smoke" if args.smoke else "gpu-" + meta["device"].replace(" ", "_")
    stem += "-fsdp" if args.fsdp else ""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "results": [asdict(r) for r in results]}
    (args.out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2))
    (args.out_dir / f"{stem}.md").write_text(table)


if __name__ == "__main__":
    main()
