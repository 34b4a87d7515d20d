"""Pre-flight memory estimate of a training run, from the model's architecture alone.

python -m src.estimate model=qwen2_7b_base method=sft trainer.batch_size=8 trainer.max_len=512

Prints weights, gradients, optimizer states and activations against the visible GPU (or common
cards), and which option fits: LoRA, QLoRA, gradient checkpointing, DeepSpeed ZeRO-3. The
counting itself is src/model/memory.py.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from src.config import CONF_DIR
from src.config.cli import hydra_command, job_boundary
from src.config.schema import register_configs
from src.model.memory import num_labels_of, plan_from_config, report, shape_for

register_configs("train")

# Nothing to write: no output directory, logs to the terminal only.
QUIET = ("hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout")


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Print the estimate of the run the same arguments would start with `python -m src.train`."""
    from src.config.checks import check_estimate

    with job_boundary(cfg):
        check_estimate(cfg)
        shape, name = shape_for(cfg)
        print(report(shape, plan_from_config(cfg, num_labels_of(cfg)), name))


def cli() -> None:
    """`python -m src.estimate` / `clfsweep-estimate`: writes nothing unless told where."""
    given = {arg.split("=", 1)[0] for arg in sys.argv[1:]}
    sys.argv += [arg for arg in QUIET if arg.split("=", 1)[0] not in given]
    main()


if __name__ == "__main__":
    cli()
