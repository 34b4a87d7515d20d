"""The MLflow UI, checked as a person would: `mlflow ui` on 127.0.0.1 and headless Chromium.

Needs Debian's chromium (`apt-get install -y chromium`; never a downloaded browser). The store
holds what a sweep leaves: a parent run and two child runs with `eval_macro_f1` per epoch.
The screenshot is saved under the test's tmp dir and copied to docs/img/mlflow_ui.png.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # a browser: about a minute

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,900",
]
SHARE_KEY = "clfsweep-ui-check"  # an MLflow "shared view" of the runs table
CHILDREN = {"tiny_qwen2-lora-job0": [0.61, 0.72], "tiny_qwen2-sft-job1": [0.58, 0.69]}
PARENT = "sweep-2026-01-01"


@dataclass
class Store:
    uri: str
    experiment_id: str
    parent_id: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A parent run and two children (mlflow.parentRunId) with eval_macro_f1 at epochs 1, 2."""
    root = tmp_path_factory.mktemp("ui_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("ui_check", artifact_location=(root / "artifacts").as_uri())
    parent = client.create_run(exp, run_name=PARENT, tags={"clfsweep.sweep": PARENT})
    pid = parent.info.run_id
    for name, values in CHILDREN.items():
        tags = {"mlflow.parentRunId": pid, "clfsweep.state": "completed"}
        run = client.create_run(exp, run_name=name, tags=tags).info.run_id
        client.log_param(run, "method.name", name.split("-")[1])
        for epoch, value in enumerate(values, start=1):
            client.log_metric(run, "eval_macro_f1", value, step=epoch)
        client.set_terminated(run)
    client.set_terminated(pid)
    # The view the UI's "Share" button stores: eval_macro_f1 as a column, sorted by it (a sorted
    # table lists child runs flat instead of folded under their parent).
    view = {
        "selectedColumns": ["metrics.`eval_macro_f1`", "params.`method.name`"],
        "orderByKey": "metrics.`eval_macro_f1`",
        "orderByAsc": False,
    }
    client.set_experiment_tag(exp, f"mlflow.sharedViewState.{SHARE_KEY}", json.dumps(view))
    return Store(uri, exp, pid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow ui` on a free loopback port; stopped (its process group) afterwards."""
    if CHROMIUM is None:
        pytest.skip("needs Debian chromium: apt-get install -y chromium")
    port = free_port()
    log = tmp_path_factory.mktemp("ui_server") / "server.log"
    root = Path(store.uri.removeprefix("sqlite:///")).parent
    cmd = [
        *(sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)),
        *("--backend-store-uri", store.uri, "--default-artifact-root", str(root / "artifacts")),
        *("--workers", "1"),
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow ui did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def chromium(url: str, profile: Path, *args: str, budget_ms: int = 20000) -> str:
    """Run headless chromium on a page; returns stdout (the DOM with --dump-dom)."""
    assert CHROMIUM is not None
    profile_flags = [f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    result = subprocess.run(
        [CHROMIUM, *FLAGS, *profile_flags, *args, url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def visible_text(dom: str) -> str:
    """The page's text: scripts, styles and tags removed, whitespace collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def page_text(url: str, profile: Path, *expected: str) -> str:
    """The rendered page's text, reloaded once with a longer budget if something is missing."""
    text = ""
    for budget in (20000, 60000):
        text = visible_text(chromium(url, profile, "--dump-dom", budget_ms=budget))
        if all(e in text for e in expected):
            break
    return text


def test_experiment_page_folds_the_child_runs_under_the_parent(
    server: str, store: Store, tmp_path: Path
) -> None:
    text = page_text(f"{server}/#/experiments/{store.experiment_id}/runs", tmp_path, PARENT)
    assert "ui_check" in text and "Training runs" in text
    assert PARENT in text
    assert "3 matching runs" in text  # the children are there, folded under their parent
    assert not any(name in text for name in CHILDREN)


def test_runs_table_shows_parent_children_and_eval_macro_f1(
    server: str, store: Store, tmp_path: Path
) -> None:
    url = f"{server}/#/experiments/{store.experiment_id}/runs?viewStateShareKey={SHARE_KEY}"
    text = page_text(url, tmp_path / "profile", PARENT, *CHILDREN, "eval_macro_f1")
    assert PARENT in text
    for name in CHILDREN:
        assert name in text
    assert "eval_macro_f1" in text
    # Each child's latest eval_macro_f1 (epoch 2), sorted descending.
    assert re.search(r"0\.72\b.*0\.69\b", text), text[-1500:]
    screenshot = tmp_path / "mlflow_ui.png"
    chromium(url, tmp_path / "profile", f"--screenshot={screenshot}")
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000
    docs = ROOT / "docs" / "img"
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, docs / "mlflow_ui.png")
