"""Specification of tests/ci_policy.py: on CI (`CI=true`) every skip fails the run, with its
reason; elsewhere skips stay skips (a laptop without chromium runs the rest)."""

from __future__ import annotations

import pytest

from tests.ci_policy import ADVICE

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
