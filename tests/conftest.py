"""Suite-wide pytest options: ``--fail-on-skip`` makes any skip outside ``tests/skips_allowed.txt`` an error.

The full install (``pip install -e ".[all,dev]"``, as CI does) has every optional dependency, so a skipped
test there means something is broken (an import error in one of our modules, a missing extra), not that a
dependency is legitimately absent. CI runs ``python -m pytest --fail-on-skip`` on that install; the
per-package tox environments, which lack extras by design, run without it.

The allow-list holds one entry per line, ``<node id or fnmatch pattern>  # <reason>``; an entry without a
reason is rejected. Skips of whole modules (at collection) are matched by the module's path.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

ALLOWLIST = Path(__file__).with_name("skips_allowed.txt")
"""The file of skips that ``--fail-on-skip`` accepts, each with its reason."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fail-on-skip",
        action="store_true",
        default=False,
        help=f"fail the run if a test or module is skipped and not listed in {ALLOWLIST.name}",
    )


def read_allowlist(path: Path = ALLOWLIST) -> dict[str, str]:
    """Patterns of allowed skips and their reasons, read from ``path``.

    Raises:
        pytest.UsageError: for an entry without a reason.
    """
    allowed: dict[str, str] = {}
    if not path.exists():
        return allowed
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        if not reason.strip():
            raise pytest.UsageError(f"{path}:{n}: entry {pattern.strip()!r} has no reason; write '<pattern>  # <why>'.")
        allowed[pattern.strip()] = reason.strip()
    return allowed


class _SkipGuard:
    """Collects skip reports and fails the session on those not allowed."""

    def __init__(self, allowed: dict[str, str]) -> None:
        self.allowed = allowed
        self.unexpected: list[tuple[str, str]] = []

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return  # xfail outcomes are reported as skipped internally; they are not skips
        nodeid = report.nodeid
        if any(fnmatch.fnmatchcase(nodeid, p) or nodeid == p for p in self.allowed):
            return
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        self.unexpected.append((nodeid, reason))

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.unexpected and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.unexpected:
            return
        terminalreporter.section("skips not allowed (--fail-on-skip)", red=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"{nodeid}: {reason}")
        terminalreporter.line(
            f"{len(self.unexpected)} skip(s) not listed in {ALLOWLIST}: fix the cause, or list the test there "
            "with the reason it may skip on the full install."
        )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fail-on-skip"):
        config.pluginmanager.register(_SkipGuard(read_allowlist()), "skip_guard")


@pytest.fixture(scope="module")
def local_ray(request: pytest.FixtureRequest):
    """A local Ray cluster of 2 CPUs for one test module, shut down after it. A module that needs a job-level
    runtime environment sets ``RAY_RUNTIME_ENV`` (a callable returning it)."""
    ray = pytest.importorskip("ray", reason="the Ray tests need the 'ray' extra")
    runtime_env = getattr(request.module, "RAY_RUNTIME_ENV", None)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
             runtime_env=runtime_env() if runtime_env else None)
    yield ray
    ray.shutdown()
