"""Security defaults: no remote code unless asked, safetensors only, no secrets in run records,
servers on loopback only."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from src.checkpoint import files as checkpoint
from src.checkpoint.files import load_checkpoint
from src.config.errors import UserError
from src.config.schema import Arch
from src.model import backbones as models
from src.model.backbones import (
    Backbone,
    check_checkpoint_dir,
    load_classifier,
    load_tokenizer,
    resolve_backbone,
)
from src.tracking.uris import redact
from src.train import train
from tests.conftest import QUICK, ROOT, Store
from tests.test_errors_catalogue import tiny_checkpoint

TEXTS = ["基金涨了", "亏钱了", "还行吧", "不错"] * 5


class Spy:
    """Wraps a `from_pretrained` and records the keyword arguments of every call."""

    def __init__(self, original: Any) -> None:
        self.original = original
        self.calls: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.original(*args, **kwargs)


def spy_on(monkeypatch: pytest.MonkeyPatch, module: Any, cls: str) -> Spy:
    """Replace `module.cls.from_pretrained` with a recording spy."""
    target = getattr(module, cls)
    spy = Spy(target.from_pretrained)
    monkeypatch.setattr(target, "from_pretrained", spy)
    return spy


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_is_passed_only_when_the_model_config_says_so(
    compose_cfg, monkeypatch, trust: bool
) -> None:
    overrides = ["model=tiny_qwen2"] + (["model.trust_remote_code=true"] if trust else [])
    cfg = compose_cfg(*QUICK, *overrides)
    # The loaders import these from transformers when called.
    tokenizer_spy = spy_on(monkeypatch, transformers, "AutoTokenizer")
    config_spy = spy_on(monkeypatch, transformers, "AutoConfig")
    model_spy = spy_on(monkeypatch, transformers, "AutoModelForSequenceClassification")
    backbone = resolve_backbone(cfg.model, TEXTS)
    tokenizer = models.load_tokenizer(backbone)
    models.load_classifier(backbone, tokenizer, ["a", "b"], torch.float32, "sdpa")
    calls = tokenizer_spy.calls + config_spy.calls + model_spy.calls
    assert tokenizer_spy.calls and config_spy.calls
    assert all(call["trust_remote_code"] is trust for call in calls)
    if trust:
        assert model_spy.calls  # remote code goes through the Auto class that can run it


def test_prediction_never_trusts_remote_code(tmp_path: Path, monkeypatch) -> None:
    path = tiny_checkpoint(tmp_path / "ckpt")
    spies = [
        spy_on(monkeypatch, checkpoint, "AutoTokenizer"),
        spy_on(monkeypatch, checkpoint, "AutoModelForSequenceClassification"),
    ]
    load_checkpoint(path)
    calls = [call for spy in spies for call in spy.calls]
    assert calls and all(not call.get("trust_remote_code", False) for call in calls)
    assert spies[1].calls[0]["use_safetensors"] is True


class Boom:
    """A pickle that runs code when loaded: it leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickled_weights_next_to_safetensors_are_never_unpickled(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "ckpt")
    marker = tmp_path / "pickle-ran"
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (path / name).write_bytes(pickle.dumps(Boom(marker)))
    load_checkpoint(path)  # prediction
    backbone = Backbone(path, Arch.encoder, trust_remote_code=False)  # training from model.path=
    load_classifier(backbone, load_tokenizer(backbone), ["a", "b"], torch.float32, None)
    assert not marker.exists()


def test_a_pickle_only_checkpoint_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tiny_checkpoint(tmp_path / "ckpt")
    (path / "model.safetensors").rename(path / "pytorch_model.bin")
    for load in (check_checkpoint_dir, load_checkpoint):
        with pytest.raises(
            UserError, match=r"found pickle files \['pytorch_model.bin'\].*safetensors"
        ):
            load(path)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg://u:p%40ss@h:5432/d", "postgresql+psycopg://u:***@h:5432/d"),
        ("http://admin:p@ss@127.0.0.1:5000/x", "http://admin:***@127.0.0.1:5000/x"),
        ("a=mysql://u:pw@h b=http://x:y@z/q", "a=mysql://u:***@h b=http://x:***@z/q"),
        ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://token@host/path", "https://token@host/path"),
    ],
)
def test_redact_hides_passwords_in_uris(uri: str, shown: str) -> None:
    assert redact(uri) == shown


def test_no_secret_reaches_params_tags_or_the_logged_config(compose_cfg, tmp_path: Path) -> None:
    secret = "s3cr3t-pg-password"
    storage = f"postgresql://clf:{secret}@db.example:5432/optuna"
    cfg = compose_cfg(*QUICK, f"trial.storage={storage}", "tracking.log_model=false")
    train(cfg)
    store = Store(tmp_path)
    (run,) = store.runs()
    records = {**run.data.params, **run.data.tags}
    assert not [key for key, value in records.items() if secret in value]
    assert records["trial.storage"] == "postgresql://clf:***@db.example:5432/optuna"
    assert "trial.storage=postgresql://clf:***@" in records["hydra.overrides"]
    local = store.client().download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    text = Path(local).read_text()
    assert secret not in text and "clf:***@db.example" in text


def test_servers_bind_loopback_only() -> None:
    makefile = (ROOT / "Makefile").read_text()
    ui = makefile.split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "--host 127.0.0.1" in ui
    services = (ROOT / "scripts" / "services.sh").read_text()
    assert "HOST=127.0.0.1" in services
    assert '--host "$HOST"' in services and "-h $HOST -p $PG_PORT" in services
    for text in (makefile, services):
        assert "0.0.0.0" not in text
