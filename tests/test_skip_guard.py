"""``--fail-on-skip`` (tests/conftest.py): CI's full-install run fails on a skip the allow-list does not name."""

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = '''
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no GPU here")

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_known_bug():
    assert False
'''


@pytest.fixture
def project(pytester):
    shutil.copy(CONFTEST, pytester.path / "conftest.py")
    pytester.makepyfile(test_a=TESTS)
    pytester.makepyfile(test_b="import pytest\npytest.importorskip('no_such_module_xyz')\n")
    return pytester


def test_skips_pass_without_the_option(project):
    result = project.runpytest()
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == 0


def test_unlisted_skips_fail_the_run(project):
    result = project.runpytest("--fail-on-skip")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_a.py::test_skips: *no GPU here*"])
    result.stdout.fnmatch_lines(["*test_b.py: *no_such_module_xyz*"])


def test_listed_skips_pass(project):
    (project.path / "skips_allowed.txt").write_text(
        "# comment\ntest_a.py::test_skips  # needs a GPU\ntest_b.py  # an optional extra\n"
    )
    result = project.runpytest("--fail-on-skip")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == 0


def test_entries_need_a_reason(project):
    (project.path / "skips_allowed.txt").write_text("test_a.py::test_skips\n")
    result = project.runpytest("--fail-on-skip")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*has no reason*"])


def test_failures_keep_their_exit_code(project):
    project.makepyfile(test_c="def test_fails():\n    assert False\n")
    result = project.runpytest("--fail-on-skip")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
