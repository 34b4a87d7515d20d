"""Memory of a training step, from the model's architecture alone (`python -m src.estimate`).

Weights, gradients, optimizer states and activations (with and without gradient checkpointing)
against the visible GPU memory, and which option fits: LoRA, QLoRA, gradient checkpointing,
FSDP over several GPUs. The architecture comes from `model.path`'s config.json, the tiny presets'
built checkpoint, or a table of the Hub presets' sizes (nothing is downloaded).

What is counted, per training step at the longest batch (trainer.batch_size x trainer.max_len):
- weights: frozen backbones in bf16 (LoRA family, head_only on a bf16 GPU), fp32 master weights
  when backbone weights train (sft, freeze_layers) or on a CPU; QLoRA: NF4 linear layers
  (4.13 bits a weight with double quantisation), other weights fp32 (PEFT's
  `prepare_model_for_kbit_training` upcasts them);
- gradients (fp32) and AdamW's two fp32 moments of the trainable parameters;
- activations saved for the backward pass, per token and layer: a Llama / Qwen2 block keeps
  6 hidden + 2 KV + 4 MLP-width vectors (norm inputs, attention inputs / outputs, SwiGLU), a BERT
  block 8 hidden + 2 MLP-width vectors and its dropout masks; attention itself keeps no
  seq x seq matrix (SDPA / flash kernels), except BERT's attention dropout on a CPU; every LoRA
  adapter with dropout keeps a copy of its input and its mask; with gradient checkpointing each
  block keeps only its input and one block is recomputed at a time;
- temporaries of the backward pass (the gradient flowing back through the top block), bf16
  copies of fp32 weights under autocast, and on a GPU the CUDA context.
Each method's own terms (trainable parameters, weights, adapter activations, the blocks that
keep activations) come from its class in src/model/methods; an unknown method is refused.
Checked against the tensor-level peak of a training step measured on tiny models on a CPU
(tests/test_estimate.py); on a GPU, expect the allocator's fragmentation on top (~10 %).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from src.config.errors import json_record
from src.config.schema import Precision
from src.model.methods import method_named, method_of
from src.model.precision import Device, resolve_precision
from src.model.processes import under_torchrun, world_size

GIB = 2**30
CUDA_CONTEXT = 0.5 * GIB  # CUDA context + cuBLAS workspaces, about
HEADROOM = 0.9  # plan for 90 % of the card: the caching allocator fragments
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shape:
    """The sizes that decide memory: a Llama / Qwen2 decoder or a BERT encoder."""

    family: str  # qwen2 | llama | bert
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    max_positions: int = 512  # BERT: learned position embeddings
    type_vocab: int = 2  # BERT: token type embeddings

    @property
    def encoder(self) -> bool:
        return self.family == "bert"

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.heads)

    def linears(self) -> dict[str, tuple[int, int, bool]]:
        """Per-block linear layers: name -> (in, out, bias); names as LoRA targets match them."""
        h, i = self.hidden, self.intermediate
        if self.encoder:
            return {
                "query": (h, h, True),
                "key": (h, h, True),
                "value": (h, h, True),
                "attention.output.dense": (h, h, True),
                "intermediate.dense": (h, i, True),
                "output.dense": (i, h, True),
            }
        bias = self.family == "qwen2"  # Qwen2 has q/k/v biases
        return {
            "q_proj": (h, h, bias),
            "k_proj": (h, self.kv_dim, bias),
            "v_proj": (h, self.kv_dim, bias),
            "o_proj": (h, h, False),
            "gate_proj": (h, i, False),
            "up_proj": (h, i, False),
            "down_proj": (i, h, False),
        }

    def block_linear_params(self) -> int:
        return sum(a * b + (b if bias else 0) for a, b, bias in self.linears().values())

    def block_params(self) -> int:
        norms = 4 * self.hidden if self.encoder else 2 * self.hidden  # LayerNorm has a bias
        return self.block_linear_params() + norms

    def embedding_params(self) -> int:
        h = self.hidden
        if self.encoder:
            return (self.vocab + self.max_positions + self.type_vocab) * h + 2 * h
        return self.vocab * h

    def head_params(self, num_labels: int) -> int:
        """Final norm / pooler and the classification head."""
        h = self.hidden
        if self.encoder:
            return h * h + h + h * num_labels + num_labels  # pooler + classifier
        return h + h * num_labels  # final RMSNorm + score (no bias)

    def parameters(self, num_labels: int = 2) -> int:
        body = self.layers * self.block_params()
        return self.embedding_params() + body + self.head_params(num_labels)

    def targeted(self, targets: tuple[str, ...]) -> dict[str, tuple[int, int, bool]]:
        """The block's linear layers a target list matches (suffix match, as PEFT's)."""
        linears = self.linears()
        if not targets or "all-linear" in targets:
            return linears
        return {
            name: dims
            for name, dims in linears.items()
            if any(name == t or name.endswith(f".{t}") or name.split(".")[-1] == t for t in targets)
        }

    def pooler_targeted(self, targets: tuple[str, ...]) -> bool:
        """Whether LoRA also wraps BERT's pooler (`pooler.dense` matches the target "dense")."""
        return self.encoder and (not targets or any(t in ("dense", "all-linear") for t in targets))


# Sizes of the Hub presets in conf/model (from each model's config.json on the Hub).
_QWEN2_7B = Shape("qwen2", 3584, 28, 28, 4, 18944, 152064)
_QWEN25_05B = Shape("qwen2", 896, 24, 14, 2, 4864, 151936)
_QWEN25_15B = Shape("qwen2", 1536, 28, 12, 2, 8960, 151936)
_QWEN25_3B = Shape("qwen2", 2048, 36, 16, 2, 11008, 151936)
_LLAMA31_8B = Shape("llama", 4096, 32, 32, 8, 14336, 128256)
_BERT_BASE_ZH = Shape("bert", 768, 12, 12, 12, 3072, 21128)
_ROBERTA_LARGE_ZH = Shape("bert", 1024, 24, 16, 16, 4096, 21128)
PRESETS: dict[str, Shape] = {
    "qwen2_7b_base": _QWEN2_7B,
    "qwen2_7b_instruct": _QWEN2_7B,
    "Qwen/Qwen2-7B": _QWEN2_7B,
    "Qwen/Qwen2-7B-Instruct": _QWEN2_7B,
    "qwen2_5_7b_base": _QWEN2_7B,
    "qwen2_5_7b_instruct": _QWEN2_7B,
    "Qwen/Qwen2.5-7B": _QWEN2_7B,
    "Qwen/Qwen2.5-7B-Instruct": _QWEN2_7B,
    "qwen2_5_0_5b_base": _QWEN25_05B,
    "qwen2_5_0_5b_instruct": _QWEN25_05B,
    "Qwen/Qwen2.5-0.5B": _QWEN25_05B,
    "Qwen/Qwen2.5-0.5B-Instruct": _QWEN25_05B,
    "Qwen/Qwen2-0.5B": _QWEN25_05B,
    "qwen2_5_1_5b_base": _QWEN25_15B,
    "qwen2_5_1_5b_instruct": _QWEN25_15B,
    "Qwen/Qwen2.5-1.5B": _QWEN25_15B,
    "Qwen/Qwen2.5-1.5B-Instruct": _QWEN25_15B,
    "Qwen/Qwen2-1.5B": _QWEN25_15B,
    "qwen2_5_3b_base": _QWEN25_3B,
    "qwen2_5_3b_instruct": _QWEN25_3B,
    "Qwen/Qwen2.5-3B": _QWEN25_3B,
    "Qwen/Qwen2.5-3B-Instruct": _QWEN25_3B,
    "llama3_1_8b_base": _LLAMA31_8B,
    "llama3_1_8b_instruct": _LLAMA31_8B,
    "meta-llama/Llama-3.1-8B": _LLAMA31_8B,
    "meta-llama/Llama-3.1-8B-Instruct": _LLAMA31_8B,
    "bert_base_chinese": _BERT_BASE_ZH,
    "google-bert/bert-base-chinese": _BERT_BASE_ZH,
    "chinese_roberta_wwm_ext_large": _ROBERTA_LARGE_ZH,
    "hfl/chinese-roberta-wwm-ext-large": _ROBERTA_LARGE_ZH,
}


def shape_from_config(config: dict[str, Any]) -> Shape:
    """The shape of a HF config.json (qwen2, llama and BERT-like model types)."""
    model_type = str(config.get("model_type", ""))
    family = {"qwen2": "qwen2", "llama": "llama", "mistral": "llama"}.get(model_type)
    if model_type in ("bert", "roberta", "xlm-roberta", "ernie"):
        family = "bert"
    if family is None:
        raise ValueError(f"no memory model for model_type={model_type!r}")
    heads = int(config["num_attention_heads"])
    return Shape(
        family=family,
        hidden=int(config["hidden_size"]),
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        intermediate=int(config["intermediate_size"]),
        vocab=int(config["vocab_size"]),
        max_positions=int(config.get("max_position_embeddings", 512)),
        type_vocab=int(config.get("type_vocab_size", 2)),
    )


def shape_of(path: Path) -> Shape:
    """The shape of a checkpoint directory (its config.json)."""
    return shape_from_config(json_record(Path(path) / "config.json", "the model's config"))


@dataclass(frozen=True)
class Plan:
    """What the run trains and how: the inputs of the estimate besides the shape."""

    method: str = "lora"
    rank: int = 16
    target_modules: tuple[str, ...] = ()  # empty: every projection
    lora_dropout: float = 0.05
    train_embeddings: bool = False
    trainable_layers: int = 2
    batch_size: int = 16
    max_len: int = 512
    num_labels: int = 2
    precision: str = "bf16"  # bf16 | fp16 | fp32
    gradient_checkpointing: bool = False
    device: str = "cuda"  # cuda | cpu
    zero_stage: int = 0  # DeepSpeed ZeRO / FSDP: 2 shards gradients and states, 3 weights too
    shards: int = 1  # GPUs the states are sharded over


@dataclass(frozen=True)
class Estimate:
    """Bytes of each part of a training step's peak."""

    parameters: int
    trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    activations_checkpointed: float
    temporaries: float
    runtime: float  # CUDA context
    plan: Plan = field(default_factory=Plan)

    @property
    def used_activations(self) -> float:
        forced = method_named(self.plan.method).forces_gradient_checkpointing
        gc = self.plan.gradient_checkpointing or forced
        return self.activations_checkpointed if gc else self.activations

    @property
    def total(self) -> float:
        states = self.weights + self.gradients + self.optimizer
        return states + self.used_activations + self.temporaries + self.runtime

    def as_metrics(self) -> dict[str, float]:
        """`estimate_*` values in GiB (MLflow metrics)."""
        parts = {
            "weights": self.weights,
            "gradients": self.gradients,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "activations_checkpointed": self.activations_checkpointed,
            "temporaries": self.temporaries + self.runtime,
            "total": self.total,
        }
        return {f"estimate_{k}_gib": v / GIB for k, v in parts.items()} | {
            "estimate_parameters": float(self.parameters),
            "estimate_trainable_parameters": float(self.trainable),
        }


def trainable_parameters(shape: Shape, plan: Plan) -> int:
    """Parameters the optimizer updates."""
    return method_named(plan.method).trainable_parameters(shape, plan)


def weight_bytes(shape: Shape, plan: Plan) -> float:
    """Bytes of all weights as the run stores them (adapters and head included)."""
    return method_named(plan.method).weight_bytes(shape, plan)


def activation_bytes(shape: Shape, plan: Plan) -> tuple[float, float, float]:
    """(saved activations, the same with gradient checkpointing, backward temporaries)."""
    b, s, h, i = plan.batch_size, plan.max_len, shape.hidden, shape.intermediate
    tokens = b * s
    p = 2.0 if plan.precision in ("bf16", "fp16") else 4.0  # autocast keeps half activations
    if shape.encoder:
        # x, q, k, v, attention out, 2 LayerNorm inputs, LayerNorm out, GELU in / out; masks.
        per_token = p * (8 * h + 2 * i) + 2 * h
        # With attention dropout the CPU's SDPA falls back to the math kernel, which keeps the
        # probabilities, the (float) dropout mask and the dropped probabilities.
        per_seq = shape.heads * s * s * 3 * p if plan.device == "cpu" else 0.0
        outside = tokens * (p * 4 * h + h)  # embeddings sum, LayerNorm, dropout
        head_input = b * p * h  # the pooled [CLS] vector
    else:
        # 2 norm inputs + 2 norm outputs, q, attention out; k, v; gate, up, SiLU out, product.
        per_token = p * (6 * h + 2 * shape.kv_dim + 4 * i)
        if p == 2.0:
            per_token += 4.0 * 2 * h  # RMSNorm computes in fp32 and keeps its fp32 input
        per_seq = 0.0
        outside = tokens * p * 2 * h  # final norm input / output
        head_input = tokens * p * h  # the score layer runs on every position
    method = method_named(plan.method)
    per_token += method.activations_per_token(shape, plan, p)
    block = tokens * per_token + b * per_seq
    blocks = method.blocks_keeping_activations(shape, plan)
    if blocks == 0:  # only the head's input, next to what a forward pass holds at a time
        full = checkpointed = 0.75 * block + head_input  # about 3/4 of a block's tensors
    else:
        full = blocks * block + outside
        checkpointed = blocks * tokens * p * h + block + outside
    # Backward: the gradient of the top block's activations, alive next to the saved ones.
    temporaries = tokens * p * 2 * max(h, i) if blocks else 0.0
    if method.fp32_master_weights and p == 2.0:
        temporaries += 2.0 * shape.layers * shape.block_linear_params()  # autocast bf16 copies
    return full, checkpointed, temporaries


def estimate(shape: Shape, plan: Plan) -> Estimate:
    """The memory of one training step of `plan` on a model of `shape`."""
    trainable = trainable_parameters(shape, plan)
    activations, checkpointed, temporaries = activation_bytes(shape, plan)
    weights, grad_bytes, state_bytes = weight_bytes(shape, plan), 4.0, 8.0
    if plan.zero_stage >= 2:
        # DeepSpeed / FSDP keep half-precision weights and gradients; the optimizer holds the
        # fp32 master weights next to its moments (ZeRO's 2 + 2 + 12 bytes a parameter).
        half = plan.precision in ("bf16", "fp16")
        if half and method_named(plan.method).fp32_master_weights:
            weights, grad_bytes, state_bytes = 2.0 * shape.parameters(plan.num_labels), 2.0, 12.0
            autocast = 2.0 * shape.layers * shape.block_linear_params()
            temporaries -= autocast  # no autocast copies: the weights are bf16 already
        shards = max(plan.shards, 1)
        if plan.zero_stage >= 3:  # each block's weights are gathered while it runs
            temporaries += 2 * shape.block_params() * (2.0 if half else 4.0)
            weights /= shards
        grad_bytes, state_bytes = grad_bytes / shards, state_bytes / shards
    return Estimate(
        parameters=shape.parameters(plan.num_labels),
        trainable=trainable,
        weights=weights,
        gradients=grad_bytes * trainable,
        optimizer=state_bytes * trainable,
        activations=activations,
        activations_checkpointed=checkpointed,
        temporaries=temporaries,
        runtime=CUDA_CONTEXT if plan.device == "cuda" else 0.0,
        plan=plan,
    )


def options(shape: Shape, plan: Plan) -> list[tuple[str, Estimate]]:
    """The run as configured and the usual ways to make it smaller."""
    method = method_named(plan.method)
    gc = replace(plan, gradient_checkpointing=True)
    lora = replace(plan, method="lora", rank=plan.rank if method.trains_adapters else 16)
    out = [("as configured", plan)]
    if not plan.gradient_checkpointing:
        out.append(("+ gradient checkpointing", gc))
    if not method.trains_adapters:
        out += [
            (f"LoRA r={lora.rank}", lora),
            (
                f"LoRA r={lora.rank} + gradient checkpointing",
                replace(lora, gradient_checkpointing=True),
            ),
        ]
    if not method.quantizes_backbone and not shape.encoder:
        out.append(
            (
                f"QLoRA r={lora.rank} + gradient checkpointing",
                replace(lora, method="qlora", gradient_checkpointing=True),
            )
        )
    return [(name, estimate(shape, p)) for name, p in out]


def zero3_gpus(shape: Shape, plan: Plan, gpu_bytes: float, max_gpus: int = 64) -> int | None:
    """The fewest GPUs of `gpu_bytes` on which FSDP (ZeRO-3's sharding) fits the run
    (checkpointed)."""
    base = replace(plan, gradient_checkpointing=True)
    for n in range(1, max_gpus + 1):
        if estimate(shape, replace(base, zero_stage=3, shards=n)).total <= HEADROOM * gpu_bytes:
            return n
    return None


def visible_gpu() -> tuple[str, float] | None:
    """(name, total bytes) of the current CUDA device, None without one."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    return torch.cuda.get_device_name(index), float(
        torch.cuda.get_device_properties(index).total_memory
    )


def count(n: float) -> str:
    """1.23B, 45.6M, 7.8K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


REFERENCE_CARDS = (("24 GB card (A10, RTX 4090)", 24e9), ("A100 40GB", 40e9), ("H100 80GB", 80e9))


def report(shape: Shape, plan: Plan, name: str) -> str:
    """The estimate and which option fits, as printed by `python -m src.estimate`."""
    e = estimate(shape, plan)
    gpu = visible_gpu()
    lines = [
        f"{name}: {count(e.parameters)} parameters, {count(e.trainable)} trainable "
        f"({plan.method}); batch {plan.batch_size} x {plan.max_len} tokens, {plan.precision}",
        f"  weights            {e.weights / GIB:8.2f} GiB",
        f"  gradients          {e.gradients / GIB:8.2f} GiB",
        f"  optimizer (AdamW)  {e.optimizer / GIB:8.2f} GiB",
        f"  activations        {e.activations / GIB:8.2f} GiB"
        f"  ({e.activations_checkpointed / GIB:.2f} GiB with gradient checkpointing)",
        f"  temporaries + CUDA {(e.temporaries + e.runtime) / GIB:8.2f} GiB",
        f"  total              {e.total / GIB:8.2f} GiB",
    ]
    cards = [gpu] if gpu else list(REFERENCE_CARDS)
    if gpu is None:
        lines.append("no CUDA GPU is visible here: compared against common cards instead")
    for card, capacity in cards:
        lines.append(f"{card} ({capacity / GIB:.0f} GiB, plan for {HEADROOM:.0%}):")
        for option, est in options(shape, plan):
            fits = est.total <= HEADROOM * capacity
            lines.append(
                f"  {'fits   ' if fits else 'too big'} {est.total / GIB:8.2f} GiB  {option}"
            )
        n = zero3_gpus(shape, plan, capacity)
        lines.append(
            "  FSDP (+ gradient checkpointing): "
            + (f"fits on {n} such GPUs" if n else "does not fit on 64 such GPUs")
            + (f" (make train-ddp NPROC={n} ARGS='... trainer.strategy=fsdp')" if n else "")
        )
    return "\n".join(lines)


def zero_of(cfg: Any) -> int:
    """The ZeRO stage of the run as configured: 3 with trainer.strategy=fsdp (0: unsharded)."""
    return 3 if str(getattr(cfg.trainer, "strategy", "auto")).endswith("fsdp") else 0


def plan_from_config(cfg: Any, num_labels: int = 2, device: str = "cuda") -> Plan:
    """The Plan of a composed `train` config, for a run on `device`.

    The precision is the one training resolves (src/model/precision.py) on that device; with
    no GPU visible, a current one (bf16) is assumed. Sharding: over $WORLD_SIZE processes
    (torchrun), else over the visible GPUs.
    """
    import torch

    if device == "cpu":
        runs_on = Device(cuda=False, bf16=False)
    else:  # the GPU this process sees, else a current one (bf16)
        runs_on = Device.visible() if torch.cuda.is_available() else Device(cuda=True, bf16=True)
    precision = resolve_precision(Precision(cfg.trainer.precision), runs_on).value
    targets = method_of(cfg.method).target_modules(cfg.model)
    world = world_size() if under_torchrun() else max(torch.cuda.device_count(), 1)
    return Plan(
        method=str(cfg.method.name),
        rank=int(cfg.method.rank),
        target_modules=tuple(str(t) for t in targets),
        lora_dropout=float(cfg.method.dropout),
        train_embeddings=bool(cfg.method.train_embeddings),
        trainable_layers=int(cfg.method.trainable_layers),
        batch_size=int(cfg.trainer.batch_size),
        max_len=int(cfg.trainer.max_len),
        num_labels=num_labels,
        precision=precision,
        gradient_checkpointing=bool(cfg.trainer.gradient_checkpointing),
        device=device,
        zero_stage=zero_of(cfg),
        shards=world,
    )


def shape_for(cfg: Any) -> tuple[Shape, str]:
    """The architecture of the configured model: model.path or the tiny preset's config.json,
    else the size table of the Hub presets (or a config.json in the local HF cache)."""
    from src.config.errors import UserError
    from src.config.schema import Arch

    model = cfg.model
    if model.arch == Arch.classical:
        raise UserError(f"model={model.name} has no backbone: there is no GPU memory to estimate")
    if model.path:
        return shape_of(Path(str(model.path)).expanduser()), str(model.path)
    if model.tiny is not None:
        return shape_of(tiny_checkpoint(cfg)), f"{model.name} (built checkpoint)"
    for key in (model.name, model.hub_id):
        if key in PRESETS:
            return PRESETS[key], f"{model.name} ({model.hub_id or 'preset'})"
    if model.hub_id:
        try:
            from huggingface_hub import hf_hub_download

            config = hf_hub_download(str(model.hub_id), "config.json", local_files_only=True)
            return shape_of(Path(config).parent), str(model.hub_id)
        except Exception:  # not in the local cache either
            pass
    raise UserError(
        f"no architecture sizes for model={model.name}: pass model.path=DIR (a checkpoint"
        " directory with its config.json)"
    )


def tiny_checkpoint(cfg: Any) -> Path:
    """The tiny preset's checkpoint, built (or found in the cache) from the training texts a
    training run reads."""
    from src.data.mixing import read_data
    from src.model.backbones import resolve_backbone

    _, training = read_data(cfg.data, cfg.seed, cfg.task.name)
    return resolve_backbone(cfg.model, training.frame.text.tolist()).path


def num_labels_of(cfg: Any) -> int:
    """Outputs of the head: the configured label names, else 2 (the head is tiny either way)."""
    names = cfg.data.get("label_names")
    return len(names) if names else 2


def preflight(
    cfg: Any, checkpoint: Path, num_labels: int, checkpointing: bool, fsdp: bool = False
) -> dict[str, float]:
    """Before the weights load on a GPU: the estimate of the run as it will run (`checkpointing`
    activations, sharded with `fsdp` over $WORLD_SIZE) as `estimate_*` metrics (`estimate_fits`
    1 or 0), and a warning naming the options that fit if it does not. Never stops the run:
    the estimate can be off (fragmentation, kernels). Empty when the shape is unknown."""
    gpu = visible_gpu()
    try:
        shape = shape_of(checkpoint)
    except (OSError, KeyError, ValueError) as exc:
        log.warning("no pre-flight memory estimate for %s: %s", checkpoint, exc)
        return {}
    plan = replace(
        plan_from_config(cfg, num_labels),
        gradient_checkpointing=checkpointing,
        zero_stage=3 if fsdp else 0,
        shards=world_size() if fsdp else 1,
    )
    est = estimate(shape, plan)
    capacity = gpu[1] if gpu else 0.0
    fits = est.total <= HEADROOM * capacity
    fitting = [name for name, e in options(shape, plan) if e.total <= HEADROOM * capacity]
    log.info(
        "pre-flight memory estimate: %.1f GiB of %.1f GiB (%s)",
        est.total / GIB,
        capacity / GIB,
        gpu[0] if gpu else "no GPU",
    )
    if not fits:
        log.warning(
            "this run needs about %.1f GiB, more than %.0f%% of the GPU's %.1f GiB; options"
            " that fit: %s (python -m src.estimate with the same arguments prints the details)",
            est.total / GIB,
            100 * HEADROOM,
            capacity / GIB,
            ", ".join(fitting) or "none on one GPU: trainer.strategy=fsdp over several",
        )
    return est.as_metrics() | {"estimate_gpu_gib": capacity / GIB, "estimate_fits": float(fits)}
