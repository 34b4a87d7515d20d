"""Pre-flight memory estimate of a training run, from the model's architecture alone.

python -m src.estimate model=qwen2_7b_base method=sft trainer.batch_size=8 trainer.max_len=512

Prints weights, gradients, optimizer states and activations against the visible GPU (or common
cards), and which option fits: LoRA, QLoRA, gradient checkpointing, FSDP over several GPUs. The
counting itself is src/model/memory.py.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.cli.boundary import command
from src.cli.hydra_commands import hydra_command, job_boundary
from src.config import CONF_DIR
from src.config.errors import UserError
from src.config.schema import register_configs
from src.model.memory import GIB, num_labels_of, plan_from_config, report, shape_for, visible_gpu

register_configs("train")

# Nothing to write: no output directory, logs to the terminal only.
QUIET = ("hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout")


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Print the estimate of the run the same arguments would start with `python -m src.train`."""
    from src.cli.config_checks import check_estimate

    with job_boundary(cfg):
        check_estimate(cfg)
        shape, name = shape_for(cfg)
        print(report(shape, plan_from_config(cfg, num_labels_of(cfg)), name))


PLAN_CARD = ("H100 80GB", 80e9)  # the node our users have, when no GPU is visible
MULTIRUN = ("-m", "--multirun")


def grid_cells(arguments: Sequence[str]) -> tuple[list[list[str]], list[str]]:
    """The cells of a multirun's grid (each its overrides, in the order the sweeper runs them)
    and its hydra.* overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.sweep.search_space import grid_jobs

    parsed = OverridesParser.create().parse_overrides(list(arguments))
    hydra_args: list[str] = []
    lines: list[str] = []
    for override in parsed:
        line = override.input_line or override.get_key_element()
        is_hydra = override.get_key_element().lstrip("+~").startswith(("hydra.", "hydra/"))
        (hydra_args if is_hydra else lines).append(line)
    cells = grid_jobs(lines)
    if cells is None:
        ranged = [o for o in parsed if o.is_sweep_override() and not o.is_discrete_sweep()]
        raise UserError(
            f"{ranged[0].input_line}: the plan needs the values listed (a,b or range(a,b))"
        )
    return cells, hydra_args


def node_of(hydra_args: Sequence[str]) -> tuple[list[str], float, str, int | None]:
    """(devices, bytes per device, the card's name, GPUs per trial fixed or None) from the
    hydra.sweeper overrides, the visible GPUs, else one node of H100 80GB."""
    sweeper: Any = (
        OmegaConf.from_dotlist(
            [a.lstrip("+") for a in hydra_args if a.lstrip("+").startswith("hydra.sweeper.")]
        )
        .get("hydra", {})
        .get("sweeper", {})
    )
    gpu = visible_gpu()
    name, capacity = gpu if gpu else PLAN_CARD
    if sweeper.get("gpu_memory_gib"):
        name, capacity = "hydra.sweeper.gpu_memory_gib", float(sweeper.gpu_memory_gib) * GIB
    devices = [str(d) for d in sweeper.get("devices") or []]
    if not devices:
        import torch

        devices = [str(i) for i in range(torch.cuda.device_count() or 8)]
    fixed = sweeper.get("gpus_per_trial")
    return devices, capacity, name, int(fixed) if fixed else None


def plan_text(arguments: Sequence[str]) -> str:
    """The plan of `python -m src.train -m <arguments>`: a row per cell, in placement order."""
    from hydra import compose, initialize_config_dir

    from src.model.sharding import STRATEGY_NAMES, placement
    from src.sweep.placement import plan_order

    cells, hydra_args = grid_cells(arguments)
    devices, capacity, card, fixed = node_of(hydra_args)
    rows = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for cell in cells:
            rows.append(placement(compose("train", overrides=cell), capacity, fixed))
    too_big = [(c, r) for c, r in zip(cells, rows, strict=True) if r.gpus > len(devices)]
    if too_big:
        overrides, needs = too_big[0]
        raise UserError(
            f"{' '.join(overrides)} needs {needs.gpus} GPUs; the plan has {len(devices)} devices"
        )
    lines = [
        f"plan: {len(cells)} cells on {len(devices)} devices [{','.join(devices)}] of "
        f"{capacity / GIB:.0f} GiB ({card}), in the order the pool starts them "
        "(wave: trials of one wave start together when all take equally long)",
        f"{'wave':>4}  {'devices':<11} {'GPUs':>4}  {'strategy':<8} {'grad ckpt':<9} "
        f"{'GiB/GPU':>8}  overrides",
    ]
    for wave, index, taken in plan_order([r.gpus for r in rows], devices):
        row = rows[index]
        lines.append(
            f"{wave:>4}  {','.join(taken):<11} {row.gpus:>4}  {STRATEGY_NAMES[row.strategy]:<8} "
            f"{'on' if row.checkpointing else 'off':<9} {row.per_gpu / GIB:8.1f}  "
            f"{' '.join(cells[index])}"
        )
    return "\n".join(lines)


@command
def plan_cli(arguments: Sequence[str]) -> int:
    """`python -m src.estimate -m ...`: the plan, or one error line and exit 2."""
    print(plan_text(arguments))
    return 0


def cli() -> None:
    """`python -m src.estimate` / `clfsweep-estimate`: writes nothing unless told where."""
    if any(arg in MULTIRUN for arg in sys.argv[1:]):
        raise SystemExit(plan_cli([arg for arg in sys.argv[1:] if arg not in MULTIRUN]))
    given = {arg.split("=", 1)[0] for arg in sys.argv[1:]}
    sys.argv += [arg for arg in QUIET if arg.split("=", 1)[0] not in given]
    main()


if __name__ == "__main__":
    cli()
