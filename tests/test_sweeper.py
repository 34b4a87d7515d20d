"""Unit tests of the clfsweep_optuna sweeper: search space, composition, storage, liveness."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.clfsweep_optuna_sweeper.config import ClfsweepOptunaSweeperConf
from hydra_plugins.clfsweep_optuna_sweeper.optuna_sweeper import ClfsweepOptunaSweeper
from src.config.errors import UserError
from src.config.schema import TrialConfig, register_configs
from src.sweep.custom_space import extend_trial, load_extender, method_levers
from src.sweep.liveness import (
    HEARTBEAT_ATTR,
    WORKER_ATTR,
    Heartbeat,
    Worker,
    stale_reason,
)
from src.sweep.loop import _is_pruned
from src.sweep.objectives import objective_names, objective_values
from src.sweep.results import config_flags
from src.sweep.search_space import (
    coerce,
    format_value,
    grid_space,
    param_overrides,
    parse_search_space,
    quote,
)
from src.sweep.settings import PrunerName, SamplerName, SweeperSettings
from src.sweep.storage import journal_path, normalize_storage_url, open_storage, tool_commands
from src.sweep.trial import build_pruner, open_trial, report
from src.task.heads import check_optimized_metric, selection_metric
from src.tracking.names import PRUNER_ATTR
from src.tracking.processes import process_alive, process_start_ticks
from src.training.evaluate import optimized_value

ROOT = Path(__file__).resolve().parents[1]
APP_CONF = ROOT / "tests" / "sweeper_app" / "conf"
PARSER = OverridesParser.create()


def parsed(line: str) -> object:
    """The value Hydra gives the override ``k=<line>``."""
    return PARSER.parse_override(f"k={line}").value()


# -- search space -------------------------------------------------------------------------


def test_parse_intervals_and_tags() -> None:
    space = parse_search_space(
        {
            "method.rank": "tag(log, int(interval(8, 128)))",
            "trainer.lr": "tag(log, interval(1e-5, 5e-4))",
            "trainer.epochs": "int(interval(1, 4))",
            "dropout": "interval(0, 0.5)",
        },
        [],
    )
    d = space.distributions
    assert d["method.rank"] == IntDistribution(8, 128, log=True)
    assert d["trainer.lr"] == FloatDistribution(1e-5, 5e-4, log=True)
    assert d["trainer.epochs"] == IntDistribution(1, 4)
    assert d["dropout"] == FloatDistribution(0.0, 0.5)
    assert space.fixed == []
    assert "method.rank: int [8, 128] log" in space.describe()


def test_parse_choices_ranges_and_plain_lists() -> None:
    space = parse_search_space(
        {
            "a": "x,'y z',3,null,true",
            "b": "range(2, 10, 2)",
            "c": "range(0.0, 1.0, 0.25)",
            "d": "p,q",
            "e": "tag(log, range(1, 5))",
        },
        [],
    )
    d = space.distributions
    assert d["a"] == CategoricalDistribution(["x", "'y z'", 3, None, True])
    assert d["b"] == IntDistribution(2, 8, step=2)
    assert d["d"] == CategoricalDistribution(["p", "q"])
    assert d["e"] == IntDistribution(1, 4, log=True)
    # Stepped floats stay ordered for the sampler; Hydra's range excludes its stop.
    assert d["c"] == FloatDistribution(0.0, 0.75, step=0.25)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("range(0.5, 2.0, 0.5)", FloatDistribution(0.5, 1.5, step=0.5)),
        ("range(1e-4, 5e-4, 1e-4)", FloatDistribution(1e-4, 4e-4, step=1e-4)),
        ("range(1.0, 0.0, -0.25)", FloatDistribution(0.25, 1.0, step=0.25)),
        ("range(10, 0, -3)", IntDistribution(1, 10, step=3)),
        ("range(0, 3, 0.5)", FloatDistribution(0.0, 2.5, step=0.5)),
        ("shuffle(range(1, 4))", CategoricalDistribution([1, 2, 3])),
    ],
)
def test_stepped_ranges_keep_their_order_and_step(text: str, expected: object) -> None:
    dist = parse_search_space({"k": text}, []).distributions["k"]
    assert dist == expected
    if isinstance(dist, FloatDistribution):  # the values are Hydra's, without float noise
        grid = grid_space(parse_search_space({"k": text}, []))["k"]
        assert grid == pytest.approx(sorted(parsed(text).range()), rel=1e-12)


def test_a_stepped_log_range_of_floats_is_one_line() -> None:
    with pytest.raises(UserError, match="no stepped log scale for floats"):
        parse_search_space({"k": "tag(log, range(0.1, 1.0, 0.1))"}, [])


def test_command_line_sweeps_join_the_space_and_fixed_values_win() -> None:
    space = parse_search_space(
        {"x": "interval(0, 1)", "y": "interval(0, 1)", "z": 3},
        ["model=tiny_qwen2,tiny_bert", "y=0.5", "data=fund_reviews", "+extra=1"],
    )
    assert set(space.distributions) == {"x", "model"}
    assert space.distributions["model"] == CategoricalDistribution(["tiny_qwen2", "tiny_bert"])
    assert space.fixed == ["z=3", "y=0.5", "data=fund_reviews", "+extra=1"]


@pytest.mark.parametrize(
    "bad",
    ["interval(1, 1)", "tag(log, interval(0, 1))", "choice()", "range(5, 1)"],
)
def test_parse_rejects_empty_or_impossible_spaces(bad: str) -> None:
    with pytest.raises((UserError, Exception)):
        parse_search_space({"k": bad}, [])


def test_params_must_be_strings_or_scalars() -> None:
    with pytest.raises(UserError, match="sweep syntax"):
        parse_search_space({"k": [1, 2]}, [])


@pytest.mark.parametrize("value", [5e-05, 0.1, 1e20, 64, 0, True, False, None, float("inf"), -3.5])
def test_values_round_trip_through_hydra_overrides(value: object) -> None:
    (line,) = param_overrides({"k": value})
    assert parsed(line.split("=", 1)[1]) == value


def test_categorical_strings_keep_their_override_syntax() -> None:
    space = parse_search_space({"k": "choice(plain, 'with space', '3', [1,2])"}, [])
    dist = space.distributions["k"]
    assert isinstance(dist, CategoricalDistribution)
    back = [parsed(format_value(c)) for c in dist.choices]
    assert back == ["plain", "with space", "3", [1, 2]]


@pytest.mark.parametrize(
    "text",
    [
        "journal:///tmp/a b/journal.log",
        "it's",
        "back\\slash",
        "ends with\\",
        "quote\\'d",
        "${not.an.interpolation}",
        "a,b=c",
        "sqlite:////tmp/x.db",
    ],
)
def test_quote_round_trips(text: str) -> None:
    # OmegaConf resolves the escaped interpolation when the value lands in the config.
    assert OmegaConf.create({"k": parsed(quote(text))}).k == text


def test_coerce_enqueued_values() -> None:
    assert coerce("r", 64.0, IntDistribution(8, 128)) == 64
    assert coerce("r", "64", IntDistribution(8, 128)) == 64
    assert coerce("lr", "5e-5", FloatDistribution(1e-5, 1e-3)) == 5e-5
    cat = CategoricalDistribution(["tiny_qwen2", "'3'", 3, None])
    assert coerce("m", "tiny_qwen2", cat) == "tiny_qwen2"
    assert coerce("m", "3", cat) == "'3'"
    assert coerce("m", 3, cat) == 3
    assert coerce("m", None, cat) is None
    with pytest.raises(UserError, match="not one of"):
        coerce("m", "nope", cat)
    with pytest.raises(UserError, match="not a number"):
        coerce("r", 2.5, IntDistribution(1, 4))


def test_grid_space_needs_finite_params() -> None:
    space = parse_search_space({"a": "x,y", "b": "range(1, 4)"}, [])
    assert grid_space(space) == {"a": ["x", "y"], "b": [1, 2, 3]}
    with pytest.raises(UserError, match="grid"):
        grid_space(parse_search_space({"a": "interval(0, 1)"}, []))
    stepped = parse_search_space({"lr": "range(0.1, 0.35, 0.1)"}, [])
    assert grid_space(stepped) == {"lr": [0.1, 0.2, 0.3]}  # not 0.30000000000000004


# -- settings and job outcomes ------------------------------------------------------------


def test_settings_validate() -> None:
    s = SweeperSettings.from_kwargs(
        {"study_name": "s", "n_trials": 3, "sampler": {"name": "random", "seed": 1}}
    )
    assert (s.sampler.name, s.sampler.seed, s.sampler.kwargs) == (SamplerName.random, 1, {})
    assert s.pruner.name == PrunerName.median
    assert s.pruner.spec() == {"name": "median"}
    assert s.directions == ["maximize"]
    never = SweeperSettings.from_kwargs({"study_name": "s", "max_failure_rate": 1.0})
    assert never.max_failure_rate == 1.0  # never stop on failures, as hydra-optuna-sweeper
    two = SweeperSettings.from_kwargs({"study_name": "s", "direction": ["maximize", "MINIMIZE"]})
    assert two.directions == ["maximize", "minimize"]
    for bad, message in [
        ({"max_failure_rate": 1.5}, "max_failure_rate"),
        ({"n_trials": 0}, "n_trials"),
        ({"direction": ["maximize", "upward"]}, "direction"),
        ({"direction": []}, "direction"),
        ({"direction": ["maximize", "minimize"], "sampler": {"name": "cmaes"}}, "one objective"),
        ({"custom_search_space": "configure"}, "module.name"),
        ({"custom_search_space": "m.f", "sampler": {"name": "grid"}}, "grid"),
    ]:
        with pytest.raises(UserError, match=message):
            SweeperSettings.from_kwargs({"study_name": "s", **bad})


def test_the_hydra_config_is_the_settings_plus_its_target() -> None:
    with initialize_config_dir(config_dir=str(APP_CONF), version_base="1.3"):
        cfg = compose("config", overrides=["hydra.sweeper.study_name=s"], return_hydra_config=True)
    composed = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
    assert isinstance(composed, dict)
    assert composed.pop("_target_").endswith("ClfsweepOptunaSweeper")
    # Hydra instantiates the sweeper with the composed node: what the loop reads is the same.
    from_hydra = SweeperSettings.from_kwargs(composed)
    assert from_hydra.n_trials == 4 and from_hydra.sampler.name == SamplerName.random
    defaults = OmegaConf.to_container(OmegaConf.structured(ClfsweepOptunaSweeperConf))
    assert isinstance(defaults, dict)
    defaults.pop("_target_")
    assert defaults == OmegaConf.to_container(OmegaConf.structured(SweeperSettings))
    assert set(ClfsweepOptunaSweeperConf.__dataclass_fields__) == {
        *SweeperSettings.__dataclass_fields__,
        "_target_",
    }


def test_job_return_values() -> None:
    assert objective_values(0.5, 1) == [0.5]
    assert objective_values(3, 1) == [3.0]
    for bad in (None, float("nan"), float("inf"), "0.5", True, object(), [0.5]):
        assert objective_values(bad, 1) is None
    assert objective_values([0.5, 12], 2) == [0.5, 12.0]
    assert objective_values(OmegaConf.create([0.5, 12]), 2) == [0.5, 12.0]
    for bad in (0.5, [0.5], [0.5, 1, 2], [0.5, float("nan")], [0.5, "1"]):
        assert objective_values(bad, 2) is None
    assert _is_pruned(optuna.TrialPruned("x"))
    assert not _is_pruned(ValueError("x"))


def test_objectives_are_named_by_the_apps_optimized_metric() -> None:
    two = OmegaConf.create({"optimized_metric": ["eval_macro_f1", "trainable_params"]})
    assert objective_names(two, 2) == ["eval_macro_f1", "trainable_params"]
    assert objective_names(OmegaConf.create({"optimized_metric": "eval_rmse"}), 1) == ["eval_rmse"]
    assert objective_names(OmegaConf.create({"x": 1}), 2) is None  # an app without one
    with pytest.raises(UserError, match="one direction per metric"):
        objective_names(two, 1)


def test_the_training_job_returns_one_value_per_named_metric() -> None:
    final = {"best_eval_macro_f1": 0.8, "test_macro_f1": 0.7, "trainable_params": 1200.0}
    assert optimized_value(final, "eval_macro_f1") == 0.8
    assert optimized_value(final, ["eval_macro_f1"]) == 0.8
    assert optimized_value(final, ["eval_macro_f1", "trainable_params"]) == [0.8, 1200.0]
    assert optimized_value(final, OmegaConf.create(["test_macro_f1", "eval_macro_f1"])) == [
        0.7,
        0.8,
    ]
    with pytest.raises(RuntimeError, match="train_runtime was not produced"):
        optimized_value(final, ["eval_macro_f1", "train_runtime"])
    assert selection_metric(["trainable_params", "eval_accuracy"], "eval_macro_f1") == (
        "eval_accuracy"
    )
    assert selection_metric(["test_macro_f1", "train_runtime"], "eval_rmse") == "eval_rmse"
    check_optimized_metric(["eval_macro_f1", "trainable_params", "test_accuracy"], "single_label")
    for bad, message in [
        ("macro_f1", "eval_macro_f1\\?"),
        (["eval_macro_f1", "params"], "params is not a metric of task=single_label"),
        (["eval_macro_f1", "eval_accuracy"], "one validation metric"),
        ([], "empty"),
    ]:
        with pytest.raises(UserError, match=message):
            check_optimized_metric(bad, "single_label")


def test_multi_objective_trials_report_nothing_to_prune() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    report(trial, 0.5, 1)  # Optuna refuses intermediate values of multi-objective trials
    study.tell(trial, [0.5, 1.0])
    assert study.trials[0].intermediate_values == {}


def test_custom_search_space_suggests_after_the_configured_params() -> None:
    study = optuna.create_study()
    cfg = OmegaConf.create({"method": {"name": "lora"}, "model": {"tiny": {"num_layers": 2}}})
    seen = {}
    methods = ("lora", "dora", "freeze_layers", "head_only")
    for method in methods:
        study.enqueue_trial({"method": method})
        trial = study.ask({"method": CategoricalDistribution(methods)})
        extend_trial(method_levers, cfg, trial, {})
        seen[method] = dict(trial.params)
        study.tell(trial, 0.0)
    assert set(seen["lora"]) == set(seen["dora"]) == {"method", "method.rank"}
    assert 4 <= seen["lora"]["method.rank"] <= 128
    assert set(seen["freeze_layers"]) == {"method", "method.trainable_layers"}
    assert 1 <= seen["freeze_layers"]["method.trainable_layers"] <= 2  # the tiny model's depth
    assert seen["head_only"] == {"method": "head_only"}


def test_custom_search_space_mistakes_are_one_line() -> None:
    study = optuna.create_study()
    cfg = OmegaConf.create({})

    def clashes(cfg: object, trial: optuna.Trial) -> None:
        trial.suggest_int("method.rank", 1, 2)

    def breaks(cfg: object, trial: optuna.Trial) -> None:
        raise KeyError("cat")

    with pytest.raises(UserError, match=r"suggests method.rank, which an override fixes"):
        extend_trial(clashes, cfg, study.ask(), {"method.rank": "8"})
    with pytest.raises(UserError, match="failed on trial 1: KeyError: 'cat'"):
        extend_trial(breaks, cfg, study.ask(), {})
    with pytest.raises(UserError, match="cannot import it"):
        load_extender("no_such_module.configure")
    assert load_extender(None) is None
    assert load_extender("src.sweep.custom_space.method_levers") is method_levers


# -- composition and discovery ------------------------------------------------------------


def test_plugin_is_discovered() -> None:
    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert ClfsweepOptunaSweeper.__name__ in names


def test_sweeper_composes_by_name() -> None:
    with initialize_config_dir(config_dir=str(APP_CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra.sweeper.n_trials=7", "hydra.sweeper.pruner.name=hyperband"],
            return_hydra_config=True,
        )
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("optuna_sweeper.ClfsweepOptunaSweeper")
    assert sweeper.n_trials == 7
    assert sweeper.pruner.name.name == "hyperband"


def test_sweeper_typos_fail_at_compose_time() -> None:
    with (
        initialize_config_dir(config_dir=str(APP_CONF), version_base="1.3"),
        pytest.raises(Exception, match="sampler"),
    ):
        compose("config", overrides=["hydra.sweeper.sampler.name=tpee"], return_hydra_config=True)


@pytest.mark.parametrize(
    ("preset", "method", "names", "metrics"),
    [
        ("lora_rank_lr_epochs", "lora", {"method.rank", "trainer.lr", "trainer.epochs"}, None),
        ("sft_lr_epochs", "sft", {"trainer.lr", "trainer.epochs"}, None),
        ("smoke_tiny", "lora", {"method.rank", "trainer.lr"}, None),
        ("method_levers", "lora", {"method", "trainer.lr"}, None),
        ("f1_vs_params", "lora", {"method", "trainer.lr"}, ["eval_macro_f1", "trainable_params"]),
    ],
)
def test_presets_compose(
    preset: str, method: str, names: set[str], metrics: list[str] | None
) -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"hparams_search={preset}"], return_hydra_config=True)
    assert cfg.method.name == method
    assert cfg.hydra.sweeper._target_.endswith("ClfsweepOptunaSweeper")
    assert cfg.hydra.sweep.dir == f"sweeps/{cfg.hydra.sweeper.study_name}/trials"
    sweeper = cfg.hydra.sweeper
    settings = SweeperSettings.from_kwargs({k: v for k, v in sweeper.items() if k != "_target_"})
    assert objective_names(cfg, len(settings.directions)) == (metrics or ["eval_macro_f1"])
    check_optimized_metric(cfg.optimized_metric, cfg.task.name)
    assert load_extender(settings.custom_search_space) in (None, method_levers)
    space = parse_search_space(settings.params, [])
    assert set(space.distributions) == names
    for entry in settings.enqueue:
        for key, value in entry.items():
            coerce(key, value, space.distributions[key])


def test_lora_preset_space_and_known_good_config() -> None:
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hparams_search=lora_rank_lr_epochs"], return_hydra_config=True
        )
    d = parse_search_space(cfg.hydra.sweeper.params, []).distributions
    assert d["method.rank"] == IntDistribution(8, 128, log=True)
    assert d["trainer.lr"] == FloatDistribution(1e-5, 5e-4, log=True)
    assert d["trainer.epochs"] == IntDistribution(1, 4)
    assert cfg.method.alpha is None
    (entry,) = cfg.hydra.sweeper.enqueue
    assert {k: coerce(k, v, d[k]) for k, v in entry.items()} == {
        "method.rank": 64,
        "trainer.lr": 5e-5,
        "trainer.epochs": 3,
    }


# -- storage URLs and trials --------------------------------------------------------------


def test_storage_strings(tmp_path: Path) -> None:
    # A journal is named by its file path, as optuna-dashboard and the optuna CLI take it.
    path = str(tmp_path / "s" / "journal.log")
    assert journal_path(path) == tmp_path / "s" / "journal.log"
    assert journal_path(f"journal://{path}") == tmp_path / "s" / "journal.log"  # older spelling
    assert journal_path("sqlite:///x.db") is None
    assert normalize_storage_url("rel/j.log", tmp_path) == str(tmp_path / "rel" / "j.log")
    assert normalize_storage_url("journal://rel/j.log", tmp_path) == str(tmp_path / "rel" / "j.log")
    assert normalize_storage_url(f"journal://{path}", tmp_path) == path
    assert normalize_storage_url("sqlite:///rel.db", tmp_path) == f"sqlite:///{tmp_path}/rel.db"
    assert normalize_storage_url("sqlite:////abs.db", tmp_path) == "sqlite:////abs.db"
    pg = "postgresql://u:p@host/db"
    assert normalize_storage_url(pg, tmp_path) == pg


def test_the_commands_that_open_a_study_in_optunas_tools() -> None:
    journal = tool_commands("/data/sweeps/my study/journal.log", "my study")
    assert journal == {
        "dashboard": "optuna-dashboard --host 127.0.0.1 '/data/sweeps/my study/journal.log'",
        "optuna_cli": "optuna trials --study-name 'my study' --storage "
        "'/data/sweeps/my study/journal.log' --storage-class JournalFileBackend",
    }
    rdb = tool_commands("sqlite:////data/o.db", "s")
    assert rdb["optuna_cli"] == "optuna trials --study-name s --storage sqlite:////data/o.db"


def test_a_sqlite_file_given_as_a_journal_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "o.db"
    open_storage(f"sqlite:///{db}")  # creates the SQLite file
    with pytest.raises(UserError, match=f"is a SQLite database: give it as sqlite:///{db}"):
        open_storage(str(db))


def test_best_yaml_commands_keep_the_options_that_chose_the_config(tmp_path: Path) -> None:
    argv = ["-m", "x=interval(0, 5)", "-cd", "extra", "--config-name=alt", "-cp", "../conf"]
    assert config_flags(argv) == [
        "--config-path",
        "../conf",  # relative to the script, as Hydra reads it
        "--config-name",
        "alt",
        "--config-dir",
        str(Path("extra").absolute()),
    ]
    assert config_flags(["-m", "hydra.sweeper.n_trials=3", "x=1"]) == []


def test_open_storage_kinds(tmp_path: Path) -> None:
    journal = open_storage(str(tmp_path / "new" / "journal.log"))
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert (tmp_path / "new" / "journal.log").exists()
    rdb = open_storage(f"sqlite:///{tmp_path}/o.db", heartbeat_interval=5, grace_period=20)
    assert isinstance(rdb, optuna.storages.RDBStorage)
    assert rdb.get_heartbeat_interval() == 5
    assert rdb.grace_period == 20
    assert rdb.get_heartbeat_stale_trial_callback() is not None
    plain = open_storage(f"sqlite:///{tmp_path}/p.db")
    assert isinstance(plain, optuna.storages.RDBStorage)
    assert plain.get_heartbeat_interval() is None


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ({"name": "median", "n_startup_trials": 2}, optuna.pruners.MedianPruner),
        ({"name": "percentile", "percentile": 10}, optuna.pruners.PercentilePruner),
        ({"name": "hyperband", "min_resource": 1}, optuna.pruners.HyperbandPruner),
        (
            {"name": "successive_halving", "min_resource": None},
            optuna.pruners.SuccessiveHalvingPruner,
        ),
        ({"name": "none"}, optuna.pruners.NopPruner),
        (None, optuna.pruners.NopPruner),
    ],
)
def test_build_pruner(spec: dict[str, object] | None, kind: type) -> None:
    assert isinstance(build_pruner(spec), kind)


def test_turning_pruning_off_or_sampling_a_grid_drops_the_tuning_of_a_preset_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from src.sweep.loop import build_sampler, checked_pruner
    from src.sweep.settings import SamplerConf

    preset_pruner = {"name": "none", "n_startup_trials": 2, "n_warmup_steps": 1}
    assert isinstance(checked_pruner(preset_pruner), optuna.pruners.NopPruner)
    space = parse_search_space({"x": "choice(1,2)"}, [])
    grid = build_sampler(SamplerConf(SamplerName.grid, 0, {"n_startup_trials": 3}), space, 0)
    assert isinstance(grid, optuna.samplers.GridSampler)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("n_startup_trials" in w and "no trial is pruned" in w for w in warned)
    assert any("n_startup_trials" in w and "a grid tries every combination" in w for w in warned)


def test_build_pruner_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown pruner"):
        build_pruner({"name": "nope"})


def test_open_trial_reopens_the_sweepers_trial(tmp_path: Path) -> None:
    url = str(tmp_path / "journal.log")
    storage = open_storage(url)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study_id = storage.get_study_id_from_name("s")
    storage.set_study_system_attr(study_id, PRUNER_ATTR, {"name": "median", "n_startup_trials": 1})
    first = study.ask()
    first.report(1.0, 1)
    study.tell(first, 1.0)
    asked = study.ask({"x": FloatDistribution(0, 1)})
    asked_id = storage.get_trial_id_from_study_id_trial_number(study_id, asked.number)

    assert open_trial(TrialConfig()) is None
    trial = open_trial(TrialConfig(storage=url, study_name="s", trial_id=asked_id))
    assert trial is not None
    assert trial.number == asked.number
    assert trial.params == asked.params
    assert isinstance(trial.study.pruner, optuna.pruners.MedianPruner)
    with pytest.raises(optuna.TrialPruned):
        report(trial, 0.0, 1)  # below the median of the finished trial at step 1
    assert study.trials[1].intermediate_values == {1: 0.0}
    study.tell(asked, state=TrialState.PRUNED)
    assert open_trial(TrialConfig(storage=url, study_name="s", trial_id=asked_id)) is None


# -- liveness -----------------------------------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_process_alive() -> None:
    me = os.getpid()
    assert process_alive(me, process_start_ticks(me))
    assert not process_alive(_dead_pid())
    if process_start_ticks(me) is not None:
        assert not process_alive(me, (process_start_ticks(me) or 0) + 1)  # a reused pid


def test_zombies_are_dead() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: a zombie
    try:
        assert not process_alive(proc.pid)
    finally:
        proc.wait()


def _running(attrs: dict[str, object]) -> optuna.trial.FrozenTrial:
    """A RUNNING frozen trial with the given system attrs."""
    return optuna.trial.create_trial(state=TrialState.RUNNING, system_attrs=dict(attrs))


def test_stale_reason() -> None:
    me = Worker.current()
    now = time.time()
    host = socket.gethostname()
    dead = {"host": host, "pid": _dead_pid(), "start_ticks": None, "heartbeat": "attr"}
    assert "gone" in str(stale_reason(_running({WORKER_ATTR: dead}), me, 120, now))
    alive = me.to_attr("attr")
    assert stale_reason(_running({WORKER_ATTR: alive}), me, 120, now) is None
    remote = {"host": "elsewhere", "pid": 1, "heartbeat": "attr", "started": now - 1000}
    assert "no heartbeat" in str(stale_reason(_running({WORKER_ATTR: remote}), me, 120, now))
    fresh = {WORKER_ATTR: remote, HEARTBEAT_ATTR: now - 10}
    assert stale_reason(_running(fresh), me, 120, now) is None
    native = dict(remote, heartbeat="optuna")
    assert stale_reason(_running({WORKER_ATTR: native}), me, 120, now) is None
    assert stale_reason(_running({}), me, 120, now) is None
    orphan = _running({})
    orphan.datetime_start = datetime.fromtimestamp(now - 3600)
    assert "no worker recorded" in str(stale_reason(orphan, me, 120, now))


def test_heartbeat_thread_beats(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "journal.log"))
    study = optuna.create_study(study_name="h", storage=storage)
    study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("h"), 0
    )
    with Heartbeat(storage, [trial_id], 0.1) as hb:
        assert hb.mode == "attr"
        first = storage.get_trial(trial_id).system_attrs[HEARTBEAT_ATTR]
        time.sleep(0.35)
    last = storage.get_trial(trial_id).system_attrs[HEARTBEAT_ATTR]
    assert last > first
