"""Pytest plugin (loaded by conftest.py): on CI (`CI=true`) a skipped test fails the run.

A test skips where something it needs is missing (chromium, PostgreSQL, SLURM, a package);
`.ci/run` installs all of it on the CPU machine CI runs on, so a skip there means a test that
never runs. Each skip is reported as a failure of that test, with its reason. Expected failures
(`xfail`) are not skips and stay as they are.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

ADVICE = "skipped on CI (CI=true), where .ci/run installs what every test needs"
SKIPPED_MODULES = pytest.StashKey[list[str]]()  # a session's module-level skips on CI


def on_ci() -> bool:
    """Whether this is a CI run (`CI=true`, as CI services and .ci/run set it)."""
    return os.environ.get("CI", "").lower() == "true"


def skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    """The reason a skipped report gives (its longrepr is (path, line, reason))."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def fail_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    """Turn a skip into a failure that names the reason."""
    if on_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"{ADVICE}: {skip_reason(report)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test (or its fixtures) that skipped fails on CI."""
    report = yield
    fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module that skipped as a whole (`pytest.skip(allow_module_level=True)`, an
    `importorskip` at import) fails the run on CI at its end (a failed collection would stop
    the session before any test)."""
    report = yield
    if on_ci() and report.skipped:
        skipped = collector.config.stash.setdefault(SKIPPED_MODULES, [])
        skipped.append(f"{report.nodeid}: {skip_reason(report)}")
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Name the modules that skipped on CI."""
    for line in terminalreporter.config.stash.get(SKIPPED_MODULES, []):
        terminalreporter.write_line(f"FAILED {line} ({ADVICE})", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The run fails if a module skipped on CI."""
    if session.config.stash.get(SKIPPED_MODULES, []) and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
