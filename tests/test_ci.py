"""Specification of CI: `.ci/run` installs what the tests need and runs every test, `make test`
then the slow ones, failing if either fails; tests/ci_policy.py: on CI (`CI=true`) every skip
fails the run, with its reason; elsewhere skips stay skips (a laptop without chromium runs the
rest)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ci_policy import ADVICE
from tests.conftest import ROOT

TESTS = """
import pytest

@pytest.fixture
def browser():
    pytest.skip("needs Debian chromium")

def test_passes():
    assert True

def test_skips_in_its_body():
    pytest.skip("PostgreSQL is not installed")

def test_skips_in_a_fixture(browser):
    pass

@pytest.mark.skipif(True, reason="a condition")
def test_skipif():
    pass

@pytest.mark.xfail(reason="a known bug")
def test_expected_failure():
    assert False
"""


def run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, source: str
) -> pytest.RunResult:
    """An inner pytest session on `source` with the policy plugin, CI set to `ci`."""
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest("-p", "tests.ci_policy", "-p", "no:cacheprovider", "-rA")


def test_off_ci_skips_stay_skips(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, None, TESTS)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK


def test_on_ci_every_skip_fails_naming_its_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(pytester, monkeypatch, "true", TESTS)
    # A skip in a fixture or a skipif mark is a failed setup (an error); xfail stays xfail.
    result.assert_outcomes(passed=1, failed=1, errors=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    for reason in ("needs Debian chromium", "PostgreSQL is not installed", "a condition"):
        assert f"{ADVICE}: {reason}" in out


def test_on_ci_a_module_that_skips_whole_fails_the_run_after_the_other_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_other="def test_runs():\n    assert True\n")
    source = 'import pytest\npytest.importorskip("no_such_package_here")\n'
    result = run(pytester, monkeypatch, "true", source)
    result.assert_outcomes(passed=1, skipped=1)  # the other module still ran
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED test_inner.py: *no_such_package_here*skipped on CI*"])


def test_ci_false_is_not_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(pytester, monkeypatch, "false", TESTS)
    assert result.ret == pytest.ExitCode.OK


# -- .ci/run -------------------------------------------------------------------------------------

FAKE = """#!/usr/bin/env bash
echo "$(basename "$0") CI=$CI $*" >> "$CALLS"
exit "${EXIT:-0}"
"""


def fake_checkout(tmp_path: Path, make_exit: int, pytest_exit: int) -> tuple[Path, dict[str, str]]:
    """A copy of .ci/run in an empty checkout whose `make`, `.venv/bin/python` and `apt-get`
    only record their calls and exit as told; the environment to run it with."""
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", checkout / ".ci" / "run")
    bin_dir = tmp_path / "bin"
    for tool, code in (("make", make_exit), ("apt-get", 0), ("sudo", 0)):
        (bin_dir / tool).parent.mkdir(exist_ok=True)
        (bin_dir / tool).write_text(FAKE.replace("${EXIT:-0}", str(code)))
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE.replace("${EXIT:-0}", str(pytest_exit)))
    for tool in [*bin_dir.iterdir(), python]:
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(tmp_path / "calls"), "HOME": "/tmp"}
    return checkout, env


@pytest.mark.parametrize(
    ("make_exit", "pytest_exit", "failed"),
    [
        (0, 0, []),
        (2, 0, ["make test: exit 2"]),
        (0, 1, ["pytest -m slow: exit 1"]),
        (0, 5, ["pytest -m slow: exit 5"]),  # no slow test collected: nothing ran
        (2, 1, ["make test: exit 2", "pytest -m slow: exit 1"]),
    ],
)
def test_ci_runs_make_test_then_the_slow_tests_and_fails_if_either_fails(
    tmp_path: Path, make_exit: int, pytest_exit: int, failed: list[str]
) -> None:
    checkout, env = fake_checkout(tmp_path, make_exit, pytest_exit)
    done = subprocess.run(
        [str(checkout / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60
    )
    calls = (tmp_path / "calls").read_text().splitlines()
    tests = [c for c in calls if not c.startswith(("apt-get", "sudo"))]
    assert tests == ["make CI=true test", "python CI=true -m pytest -m slow -q"]
    assert done.returncode == (1 if failed else 0), done.stderr
    assert [line.removeprefix("CI failed: ") for line in done.stderr.splitlines()] == failed


def test_ci_installs_the_packages_that_the_skipping_tests_need() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in script and "export CI=true" in script
    packages = set(script.split("PACKAGES=(", 1)[1].split(")", 1)[0].split())
    slurm = {"slurm-wlm", "slurmdbd", "munge", "mariadb-server"}  # tests/test_slurm.py
    assert slurm | {"postgresql", "chromium"} <= packages  # test_postgres.py, test_mlflow_ui.py
