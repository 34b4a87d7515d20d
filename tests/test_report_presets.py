"""Specification of the claim presets in conf/experiment/: what each sweeps, and its CPU twin."""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from src.analysis import stats
from src.analysis.runs import CLAIM_FACTORS
from src.config.schema import register_configs
from tests.conftest import CONF, run_module

PRESETS = sorted(
    p.stem for p in (CONF / "experiment").glob("c[0-9]_*.yaml") if not p.stem.endswith("_cpu")
)
TWINS = [f"{name}_cpu" for name in PRESETS]


@functools.cache
def compose_experiment(name: str, *overrides: str) -> DictConfig:
    """The composed config (cached: each test reads it only)."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True
        )
    GlobalHydra.instance().clear()
    return cfg


def sweep_params(cfg: DictConfig) -> dict[str, str]:
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    assert isinstance(params, dict)
    return {str(k): str(v) for k, v in params.items()}


def test_every_claim_preset_has_a_cpu_twin() -> None:
    assert {
        "c1_short_text_llm_vs_bert",
        "c3_base_vs_instruct_by_size",
        "c4_lora_vs_sft_by_size",
        "c5_epochs_rank",
        "c8_lr_vs_trainable_params",
    } <= set(PRESETS)
    for twin in TWINS:
        assert (CONF / "experiment" / f"{twin}.yaml").is_file(), twin


@functools.cache
def jobs(name: str) -> list[DictConfig]:
    """The composed configs of a preset's first and last job (first / last value of each param)."""
    params = sweep_params(compose_experiment(name))
    out = []
    for pick in (0, -1):
        overrides = [f"{k}={v.split(',')[pick]}" for k, v in params.items() if k != "seed"]
        out.append(compose_experiment(name, *overrides, "seed=1"))
    return out


@pytest.mark.parametrize("name", PRESETS + TWINS)
def test_preset_names_its_experiment_and_sweeps_seeds(name: str) -> None:
    cfg = compose_experiment(name)
    assert cfg.tracking.experiment == name
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert sweep_params(cfg)["seed"] == f"range({cfg.seeds})"
    assert sweep_params(compose_experiment(name, "seeds=5"))["seed"] == "range(5)"


# The design docs/statistics.md works the presets' seeds out for: a true difference of 5 points
# found with 80 % power by the report's t-test over seeds at the Bonferroni level of its section
# (Holm's strictest step), the per-seed differences spreading 2.6 points (what the simulation in
# tests/test_stats.py measures for a seed spread of 1.5 points and 1,000 test examples).
DESIGN_EFFECT, DESIGN_SPREAD = 0.05, 0.026


def section_size(name: str) -> int:
    """How many comparisons the report of a preset makes: level pairs of the claim's factor
    times the settings of the other swept params (c2's arms: one param holds the factor)."""
    params = {k: v.split(",") for k, v in sweep_params(compose_experiment(name)).items()}
    del params["seed"]
    factor = CLAIM_FACTORS[name.removesuffix("_cpu")]
    key = next((k for k in params if k in (factor, factor.removesuffix(".name"))), None)
    compared = params.pop(key) if key else params.pop(next(iter(params)))
    return math.comb(len(compared), 2) * math.prod(len(v) for v in params.values())


@pytest.mark.parametrize("name", PRESETS + TWINS)
def test_presets_run_the_seeds_their_report_needs(name: str) -> None:
    """Enough seeds for the design's power at α/m, and no more than that needs."""
    seeds, alpha = compose_experiment(name).seeds, 0.05 / section_size(name)
    assert stats.power(DESIGN_EFFECT, DESIGN_SPREAD, seeds, alpha) >= stats.POWER
    assert stats.power(DESIGN_EFFECT, DESIGN_SPREAD, seeds - 1, alpha) < stats.POWER


@pytest.mark.parametrize("name", PRESETS + TWINS)
def test_every_job_composes_and_the_claims_factor_varies(name: str) -> None:
    """First and last job are valid configs (schema, groups) and differ in the report's factor."""
    first, last = jobs(name)
    assert first.tracking.experiment == last.tracking.experiment == name
    factor = CLAIM_FACTORS[name.removesuffix("_cpu")]
    assert OmegaConf.select(first, factor) != OmegaConf.select(last, factor), factor


@pytest.mark.parametrize("name", TWINS)
def test_cpu_twins_use_tiny_models_and_say_they_only_exercise_the_pipeline(name: str) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert "ONLY EXERCISES THE PIPELINE" in text
    for job in jobs(name):
        assert job.model.name.startswith("tiny_"), job.model.name
        assert job.tracking.log_model is False


@pytest.mark.parametrize("name", PRESETS)
def test_gpu_presets_use_hub_backbones(name: str) -> None:
    for job in jobs(name):
        assert job.model.hub_id, job.model.name
    for model in sweep_params(compose_experiment(name)).get("model", "").split(","):
        assert not model or (CONF / "model" / f"{model}.yaml").is_file(), model


@pytest.mark.slow
def test_c4_cpu_twin_runs_and_reports_end_to_end(tmp_path: Path) -> None:
    """The real commands: the CPU twin (2 seeds, smaller caps), then the report."""
    name = "c4_lora_vs_sft_by_size_cpu"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment(
        name, artifact_location=(tmp_path / "artifacts").as_uri()
    )
    train = run_module(
        "src.train",
        f"experiment={name}",
        "seeds=2",
        "data.max_train=60",
        "data.max_eval=40",
        "data.max_test=80",
        "trainer.epochs=1",
        f"tracking.uri={uri}",
        f"tracking.dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        timeout=900,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    out = tmp_path / "report"
    rep = run_module("src.report", "--experiment", name, "--tracking-uri", uri, "--out", str(out))
    assert rep.returncode == 0, rep.stderr[-3000:]
    summary = pd.read_csv(out / "summary.csv")
    assert summary["method.name"].tolist() == ["lora", "sft"] and set(summary.n) == {2}
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert comparisons[["a", "b"]].values.tolist() == [["lora", "sft"]]
    assert comparisons.verdict.item() in ("lora better", "sft better", "no significant difference")
    assert "logged to parent run" in rep.stdout


def test_the_seeds_table_of_the_statistics_docs_is_the_presets() -> None:
    """docs/statistics.md's table: each preset's m, seeds, MDE, power and seeds for 3 points."""
    text = (CONF.parent / "docs" / "statistics.md").read_text(encoding="utf-8")
    rows = re.findall(
        r"^\| (c\d_\w+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) % \| (\d+) \|$",
        text,
        re.M,
    )
    assert sorted(r[0] for r in rows) == PRESETS
    for name, m, seeds, mde, mde_3, power_3, seeds_3 in rows:
        alpha = 0.05 / int(m)
        assert (int(m), int(seeds)) == (section_size(name), compose_experiment(name).seeds)
        assert float(mde) == round(100 * stats.min_detectable(DESIGN_SPREAD, int(seeds), alpha), 1)
        assert float(mde_3) == round(100 * stats.min_detectable(DESIGN_SPREAD, 3, alpha), 1)
        power = stats.power(0.03, DESIGN_SPREAD, int(seeds), alpha)
        assert int(power_3) == round(100 * power)
        assert int(seeds_3) == stats.seeds_needed(0.03, DESIGN_SPREAD, alpha)
