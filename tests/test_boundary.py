"""One error boundary for every command, and checks by construction (src/cli/boundary.py,
src/cli/hydra_commands.py, src/cli/preflight.py): a user's mistake is one `error:` line on
stderr and exit status 2, before any MLflow run, Optuna study or folder exists; settings no code
reads, work that would do nothing and settings a library refuses are refused the same way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict
from optuna.distributions import CategoricalDistribution, IntDistribution

from src.cli.hydra_commands import check_composed
from src.config.errors import UserError, json_record, regular_file
from src.config.schema import PromptConfig, register_configs
from src.inputs.prompts import check_prompt
from src.sweep.loop import build_sampler, check_space_unchanged, checked_pruner
from src.sweep.search_space import SearchSpace
from src.sweep.settings import PrunerConf, PrunerName, SamplerConf, SamplerName
from src.training.arguments import scratch_dir
from tests.conftest import CONF, ROOT, Store, compose_train, one_error_line, run_module

# -- every command, one boundary ---------------------------------------------------------------

HYDRA_COMMANDS = {  # a command and a key no code of it reads
    "src.train": "+trainer.lr_scheduler=cosine",
    "src.pretrain": "+trainer.lr_scheduler=cosine",
    "src.noise": "+noise.calibrate=true",
    "src.estimate": "+method.lora_plus_ratio=16",
}


@pytest.mark.parametrize("module", sorted(HYDRA_COMMANDS))
def test_every_hydra_command_refuses_a_key_no_code_reads_in_one_line_before_any_run(
    store: Store, module: str
) -> None:
    result = run_module(module, "model=tiny_bert", HYDRA_COMMANDS[module], *store.overrides())
    line = one_error_line(result.stderr)
    key = HYDRA_COMMANDS[module].lstrip("+").split("=")[0]
    assert result.returncode == 2
    assert line.startswith(f"error: {key} is not a setting of this command: no code reads it")
    assert not (store.root / "mlruns" / "mlflow.db").exists()
    assert not (store.root / "outputs").exists()  # not even the run's folder


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        ("src.predict", ["--model", "x", "--batch-size", "0"], "argument --batch-size: 0 must"),
        ("src.predict", ["--model", "x", "--max-len", "-3"], "argument --max-len: -3 must"),
        ("src.predict", ["--run-id", "r1", "--tracking-uri", "foo://x"], "unknown tracking URI"),
        ("src.report", ["--experiment", "e", "--tracking-uri", "foo://x"], "unknown tracking URI"),
        ("src.report", ["--experiment", "e", "--n-boot", "3"], "--n-boot=3 must be at least"),
        ("src.summary", ["--tracking-uri", "foo://x"], "unknown tracking URI scheme 'foo:'"),
        ("src.summary", ["--bogus"], "unrecognized arguments: --bogus"),
    ],
    ids=[
        "predict-batch-0",
        "predict-max-len",
        "predict-scheme",
        "report-scheme",
        "report-n-boot",
        "summary-scheme",
        "summary-argument",
    ],
)
def test_every_argument_command_says_a_mistake_in_one_line_on_stderr(
    module: str, args: list[str], message: str
) -> None:
    result = run_module(module, *args)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)
    assert "usage:" not in result.stderr and "error:" not in result.stdout


def test_a_reading_command_never_creates_the_store_it_was_pointed_at(tmp_path: Path) -> None:
    db = tmp_path / "typo.db"
    result = run_module("src.summary", "--tracking-uri", f"sqlite:///{db}")
    assert result.returncode == 2
    assert f"{db} does not exist, so it holds no runs" in one_error_line(result.stderr)
    assert not db.exists()


# -- the composed config -----------------------------------------------------------------------


@pytest.fixture
def composed(tmp_path: Path):
    """Compose `train` with overrides (Hydra's runtime set) for the boundary's own check."""
    yield lambda *overrides: compose_train(["model=tiny_bert", *overrides], tmp_path)
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+trainer.lr_scheduler=cosine", "trainer.lr_scheduler"),
        ("+foo=1", "foo"),
        ("+model.tiny.rope_theta=1e6", "model.tiny.rope_theta"),
        ("+data.mix.shuffle=true", "data.mix.shuffle"),
        ("+tracking.tags={a: b}", "tracking.tags"),
        ("+method.lora_plus_ratio=16", "method.lora_plus_ratio"),
    ],
)
def test_a_key_the_schema_lacks_is_refused_naming_it(composed, override: str, key: str) -> None:
    with pytest.raises(UserError, match=rf"^{key} is not a setting of this command"):
        check_composed(composed(override))


def test_open_sections_take_any_key(composed) -> None:
    cfg = composed('+data.label_descriptions={good: "满意"}')
    with open_dict(cfg):
        cfg.data.label_descriptions["a+b (c)!"] = "不满"
    check_composed(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.lr=${oops}", r"trainer.lr cannot be resolved \(InterpolationKeyError: "),
        ("trainer.lr=${oc.env:CLFSWEEP_NO_SUCH_VARIABLE}", r"trainer.lr cannot be resolved"),
        ("tracking.run_name=${nosuch:x}", r"tracking.run_name cannot be resolved .*nosuch"),
        ("~trainer", r"trainer was deleted \(a `~trainer` override\?\)"),
        ("~method", r"^method has no value \(a deleted group, or \?\?\? left in a preset\)"),
    ],
    ids=["interpolation", "environment", "resolver", "deleted-section", "deleted-group"],
)
def test_a_config_that_does_not_resolve_is_one_line_naming_the_key(
    composed, override: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        check_composed(composed(override))


def test_every_preset_composes_to_keys_the_schema_has() -> None:
    register_configs()
    GlobalHydra.instance().clear()
    checked = 0
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for group in ("experiment", "hparams_search", "debug"):  # they set every other group
            for preset in sorted((CONF / group).glob("*.yaml")):
                cfg = compose("train", overrides=[f"{group}={preset.stem}"])
                check_composed_keys(cfg)
                checked += 1
        for name in ("pretrain", "noise"):
            check_composed_keys(compose(name))
    GlobalHydra.instance().clear()
    assert checked > 20


def check_composed_keys(cfg) -> None:
    """The key part of the boundary's check (a composed config's `${hydra:...}` needs a job)."""
    from src.cli.hydra_commands import check_keys

    check_keys(cfg)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("+trainer.lr_scheduler=cosine", "trainer.lr_scheduler"),
        ("trainer.lr=${oops}", "trainer.lr"),
    ],
    ids=["unknown-key", "interpolation"],
)
def test_a_run_whose_config_is_unusable_logs_nothing(store: Store, override: str, key: str) -> None:
    result = run_module("src.train", "model=tiny_bert", override, *store.overrides())
    assert result.returncode == 2
    assert one_error_line(result.stderr).startswith(f"error: {key} ")
    assert not (store.root / "mlruns" / "mlflow.db").exists()


def test_settings_transformers_refuses_are_one_line_naming_the_trainer_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import transformers

    from src.config.schema import Precision, TrainerConfig
    from src.training.arguments import training_arguments

    def refuse(self: object) -> None:
        raise ValueError("--optim adamw_torch_fused needs a GPU")

    monkeypatch.setattr(transformers.TrainingArguments, "__post_init__", refuse)
    with pytest.raises(UserError, match=r"^the trainer.\* settings .* cannot become transformers"):
        training_arguments(TrainerConfig(), tmp_path, 0, "eval_macro_f1", Precision.fp32, False)


# -- multiruns that would do nothing, or that a library refuses ----------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["trainer.epochs=range(1,1)"],
            "trainer.epochs=range(1,1) gives no values, so the multirun would launch 0 jobs",
        ),
        (["seed=range(5,2)", "method=lora,sft"], "seed=range(5,2) gives no values"),
        (
            ["hparams_search=smoke_tiny", "+hydra.sweeper.sampler.kwargs.bogus=1"],
            "hydra.sweeper.sampler: Optuna refuses tpe(seed=0, n_startup_trials=3, bogus=1) "
            "(TypeError",
        ),
        (
            [
                "hparams_search=smoke_tiny",
                "hydra.sweeper.pruner.name=percentile",
                "hydra.sweeper.pruner.percentile=150",
            ],
            "hydra.sweeper.pruner: Optuna refuses percentile(",
        ),
        (
            ["hparams_search=smoke_tiny", "+trainer.lr_scheduler=cosine"],
            "trainer.lr_scheduler is not a setting",
        ),
        (["method=lora,sft", "+trainer.lr_scheduler=cosine,linear"], "trainer.lr_scheduler is not"),
        (
            ["trainer.lr=1e-3,0", "method=lora,sft"],
            "job 2 of the grid (trainer.lr=0 method=lora): trainer.lr must be > 0, got 0.0",
        ),
        (
            ["method=lora,sft", "method.rank=8,0", "hydra.sweeper.devices=[0,1]"],
            "job 1 of the grid (method=lora method.rank=0): method.rank must be a positive",
        ),
    ],
    ids=[
        "empty-range",
        "reversed-range",
        "sampler-kwarg",
        "percentile",
        "unknown-key",
        "swept-unknown-key",
        "bad-value-in-a-later-cell",
        "bad-value-in-a-grid-on-devices",
    ],
)
def test_a_multirun_that_would_do_nothing_or_be_refused_stops_before_its_parent_run(
    store: Store, args: list[str], message: str
) -> None:
    result = run_module("src.train", "-m", "model=tiny_bert", *args, *store.overrides())
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)
    assert not (store.root / "mlruns" / "mlflow.db").exists()  # no parent run, no store
    assert not (store.root / "multirun").exists() and "Launching" not in result.stdout
    assert not list(ROOT.glob("sweeps/smoke_tiny/journal.log.*"))


def test_a_storage_that_cannot_be_created_stops_before_the_parent_run(
    store: Store, tmp_path: Path
) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    result = run_module(
        "src.train",
        "-m",
        "model=tiny_bert",
        "hparams_search=smoke_tiny",
        f"hydra.sweeper.storage={tmp_path / 'a_file' / 'journal.log'}",
        f"hydra.sweeper.study_dir={tmp_path / 'study'}",
        *store.overrides(),
    )
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"hydra.sweeper.storage={tmp_path / 'a_file' / 'journal.log'} cannot be created" in line
    assert not (store.root / "mlruns" / "mlflow.db").exists() and not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        (SamplerConf(SamplerName.tpe, 0, {"n_startup": 3}), "unexpected keyword argument"),
        (SamplerConf(SamplerName.random, 0, {"n_startup_trials": 3}), "unexpected keyword"),
        (SamplerConf(SamplerName.nsgaii, 0, {"population_size": 1}), "population_size"),
        (SamplerConf(SamplerName.qmc, 0, {"qmc_type": "nope"}), "qmc_type"),
    ],
    ids=["tpe-typo", "random-ignored-kwarg", "nsgaii-population", "qmc-type"],
)
def test_sampler_settings_optuna_refuses_are_one_line_naming_the_setting(
    conf: SamplerConf, message: str
) -> None:
    space = SearchSpace({"x": IntDistribution(1, 4)})
    with pytest.raises(UserError, match=rf"^hydra.sweeper.sampler: Optuna refuses .*{message}"):
        build_sampler(conf, space, 0)


@pytest.mark.parametrize(
    "conf",
    [
        PrunerConf(PrunerName.percentile, percentile=-1.0),
        PrunerConf(PrunerName.median, n_warmup_steps=-1),
        PrunerConf(PrunerName.median, kwargs={"patience": 3}),
        PrunerConf(PrunerName.median, reduction_factor=3),  # hyperband's: dropped silently before
    ],
    ids=["percentile", "warmup", "unknown-kwarg", "another-pruners-setting"],
)
def test_pruner_settings_optuna_refuses_are_one_line_naming_the_setting(conf: PrunerConf) -> None:
    with pytest.raises(UserError, match=r"^hydra.sweeper.pruner: Optuna refuses"):
        checked_pruner(conf.spec())


def test_resuming_a_study_with_an_incompatible_space_says_what_changed_and_what_to_do() -> None:
    study = optuna.create_study(study_name="s", direction="maximize")
    held = CategoricalDistribution([4, 8])
    study.add_trial(
        optuna.trial.create_trial(
            params={"method.rank": 4}, distributions={"method.rank": held}, value=0.5
        )
    )
    now = SearchSpace({"method.rank": IntDistribution(16, 64)})
    with pytest.raises(UserError) as caught:
        check_space_unchanged(study, now, "s")
    message = str(caught.value)
    assert "study s holds trials that sampled method.rank as choice" in message
    assert "int [16, 64]" in message and "new hydra.sweeper.study_name" in message
    assert len(study.trials) == 1  # nothing asked, nothing left RUNNING
    check_space_unchanged(study, SearchSpace({"method.rank": held}), "s")  # the same: fine


# -- user text used as code or as a name --------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "template", "placeholder"),
    [
        ("template", "{text!r}", "{text!r} has a conversion"),
        ("template", "{text!a}", "{text!a} has a conversion"),
        ("template", "Review: {text:>200}", "{text:>200} has a format spec"),
        ("label_line", "{label!s}: {description}", "{label!s} has a conversion"),
        ("example", "{text} => {label:^9}", "{label:^9} has a format spec"),
    ],
)
def test_a_prompt_placeholder_with_a_conversion_or_format_spec_is_one_line(
    field: str, template: str, placeholder: str
) -> None:
    cfg = PromptConfig(**{field: template})
    with pytest.raises(
        UserError, match=rf"^prompt.{field}=.*the placeholder {re.escape(placeholder)}"
    ):
        check_prompt(cfg, "single_label")


def test_user_keys_are_recorded_under_keys_mlflow_accepts(store: Store, tmp_path: Path) -> None:
    import mlflow

    from src.tracking import record

    cfg = compose_train(["model=tiny_bert", '+data.label_descriptions={good: "满意"}'], tmp_path)
    GlobalHydra.instance().clear()
    with open_dict(cfg):  # what a YAML preset may hold
        cfg.data.label_descriptions = {"a+b (c)!": "满意", "x?y": "不满"}
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    try:
        experiment = mlflow.create_experiment("keys")
        with mlflow.start_run(experiment_id=experiment) as run:
            record.log_config(cfg, {})
    finally:
        mlflow.set_tracking_uri(previous)
    params = store.client().get_run(run.info.run_id).data.params
    assert json.loads(params["data.label_descriptions"]) == {"a+b (c)!": "满意", "x?y": "不满"}
    assert params["trainer.lr"] == "0.0001" and params["model.tiny.hidden_size"] == "64"


# -- paths and records ---------------------------------------------------------------------------


def test_a_path_that_is_not_a_readable_file_says_what_it_is(tmp_path: Path) -> None:
    loop = tmp_path / "loop.csv"
    loop.symlink_to(tmp_path / "loop2.csv")
    (tmp_path / "loop2.csv").symlink_to(loop)
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {
        loop: "is a loop of symbolic links",
        fifo: "is not a regular file (a FIFO, socket or device)",
        tmp_path / "folder.csv": "is a folder, not a file",
        tmp_path / "none.csv": "cannot read it: file not found",
        tmp_path / "file" / "x.csv": "a part of that path is a file, not a folder",
    }
    for path, message in cases.items():
        with pytest.raises(UserError, match=rf"^data.train_path={path}: {re.escape(message)}"):
            regular_file(path, "data.train_path")


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("loop", "is a loop of symbolic links"),
        ("fifo", "is not a regular file"),
        ("dir", "is a folder, not a file"),
    ],
)
def test_a_data_path_that_is_not_a_file_stops_the_run_with_one_line(
    store: Store, tmp_path: Path, kind: str, message: str
) -> None:
    path = tmp_path / "train.csv"
    if kind == "loop":
        path.symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    result = run_module(
        "src.train",
        "model=tiny_bert",
        "data=custom",
        f"data.train_path={path}",
        *store.overrides(),
        timeout=120,
    )
    assert result.returncode == 2 and message in one_error_line(result.stderr)
    assert not (store.root / "mlruns" / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"task": "single_label", "max_l', "is cut short"),
        ("[1, 2]", "holds list, not a JSON"),
        ("\xff\xfe", "is not valid JSON"),
    ],
    ids=["cut-short", "not-an-object", "not-utf8"],
)
def test_a_record_cut_short_is_one_line_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    record = tmp_path / "clfsweep.json"
    record.write_bytes(content.encode("latin-1"))
    with pytest.raises(UserError, match=rf"^{record}: the checkpoint's record {message}"):
        json_record(record, "the checkpoint's record")


def test_predict_with_a_checkpoint_whose_record_is_cut_short_is_one_line(tmp_path: Path) -> None:
    from tests.test_errors_catalogue import tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "model")
    meta = checkpoint / "clfsweep.json"
    meta.write_text(meta.read_text()[:25])
    result = run_module("src.predict", "--model", str(checkpoint), input="好\n", timeout=120)
    assert result.returncode == 2
    assert f"{meta}: the checkpoint's record is cut short" in one_error_line(result.stderr)


# -- concurrency --------------------------------------------------------------------------------


def test_runs_started_at_once_with_one_run_dir_never_share_scratch_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    folders = set()
    for pid in (101, 102, 103):  # three runs started a second apart, one hydra.run.dir
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        folders.add(scratch_dir(tmp_path))
    assert len(folders) == 3 and {f.parent for f in folders} == {tmp_path}
    ranks = {"TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for key, value in ranks.items():
        monkeypatch.setenv(key, value)
    same = set()
    for pid in (201, 202):  # the ranks of one torchrun job share theirs
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        same.add(scratch_dir(tmp_path))
    assert len(same) == 1


def test_a_multirun_stopped_by_an_uncaught_error_never_leaves_its_parent_run_running(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from src.cli.hydra_commands import fail_open_parent
    from src.tracking.names import DEVICE_WORKER_ENV, ERROR_TAG, PARENT_ENV

    client = store.client()
    parent = client.create_run(client.create_experiment("grid")).info.run_id
    monkeypatch.setenv(PARENT_ENV, parent)
    monkeypatch.delenv(DEVICE_WORKER_ENV, raising=False)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)  # as the multirun's parent run callback leaves it
    try:
        fail_open_parent("the multirun stopped with exit status 1")
        fail_open_parent("a later stop")  # a parent already ended keeps its reason
    finally:
        mlflow.set_tracking_uri(previous)
    run = client.get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags[ERROR_TAG].startswith("the multirun stopped with exit status 1")


@pytest.mark.parametrize(
    ("broken", "what"),
    [("config.json", "config"), ("tokenizer.json", "tokenizer"), ("model_type", "config")],
    ids=["config-cut-short", "tokenizer-cut-short", "unknown-model-type"],
)
def test_a_backbone_folder_transformers_cannot_read_is_one_line_naming_it(
    tmp_path: Path, broken: str, what: str
) -> None:
    from src.config.schema import Arch
    from src.model.backbones import Backbone, backbone_config, load_tokenizer
    from tests.test_errors_catalogue import tiny_checkpoint

    folder = tiny_checkpoint(tmp_path / "backbone")
    if broken == "model_type":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | {"model_type": "no-such-model"}))
    else:
        (folder / broken).write_text((folder / broken).read_text()[:40])
    backbone = Backbone(path=folder, arch=Arch.encoder, trust_remote_code=False)
    with pytest.raises(UserError, match=rf"^transformers cannot build the {what} of the backbone"):
        (load_tokenizer if what == "tokenizer" else backbone_config)(backbone)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.batch_size=0", "trainer.batch_size must be > 0, got 0"),
        ("method.rank=0", "method.rank must be a positive integer, got 0"),
    ],
)
def test_the_estimate_checks_the_settings_it_shares_with_train(override: str, message: str) -> None:
    result = run_module("src.estimate", "model=qwen2_7b_base", override)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == f"error: {message}"
    assert "GiB" not in result.stdout


def test_a_job_folder_name_never_nests_and_always_fits(tmp_path: Path) -> None:
    from src.config import MAX_FOLDER_NAME, folder_name

    assert folder_name("method=lora,seed=1") == "method=lora,seed=1"
    assert folder_name("data.train_path=/data/a.csv") == "data.train_path=_data_a.csv"
    long = [folder_name(f"prompt.template='{'评论' * 200} {i} {{text}}'") for i in range(2)]
    assert long[0] != long[1] and all(len(n.encode()) <= MAX_FOLDER_NAME for n in long)
    for name in long:
        (tmp_path / f"0_{name}").mkdir()  # a folder the file system makes


@pytest.mark.parametrize(
    ("override", "kept"),
    [
        ("data.exclude_ids=[1e3,true]", "'1000.0'"),
        ("model.revision=1.50", "'1.5'"),
        ("tracking.experiment=1e3", "'1000.0'"),
        ("data.exclude_ids=[1_000]", "'1000'"),
    ],
)
def test_text_hydra_reads_as_a_number_and_a_setting_keeps_as_other_text_is_refused(
    store: Store, override: str, kept: str
) -> None:
    """The run would silently use other text than was typed (an id never excluded, another
    revision): one line naming it, before any run."""
    result = run_module("src.train", override, *store.overrides())
    assert result.returncode == 2
    assert f"keeps as the text {kept}, not what was typed" in one_error_line(result.stderr)
    assert not (store.root / "mlruns" / "mlflow.db").exists()


def test_a_grid_refuses_such_text_in_any_cell_before_its_parent_run(store: Store) -> None:
    grid = ["method=lora,sft", "tracking.experiment=1e3,x"]
    result = run_module("src.train", "-m", *grid, *store.overrides())
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "job 0 of the grid (method=lora tracking.experiment=1000.0): " in line
    assert "tracking.experiment=1e3,x: Hydra reads 1000.0 as a number" in line
    assert not (store.root / "mlruns" / "mlflow.db").exists()


def test_text_typed_as_text_or_numbers_kept_as_typed_pass(tmp_path: Path) -> None:
    from src.cli.hydra_commands import check_typed_texts

    overrides = ["data.exclude_ids=['1e3','true',7,abc]", "tracking.experiment=2024.1", "seed=3"]
    cfg = compose_train(overrides, tmp_path)
    check_typed_texts(cfg, overrides)
    assert list(cfg.data.exclude_ids) == ["1e3", "true", "7", "abc"]
    assert cfg.tracking.experiment == "2024.1"
