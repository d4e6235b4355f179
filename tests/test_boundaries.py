"""The import boundaries of the packages (SPEC §1), checked in the source and at import time."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "libero_gym": {"torch", "tgrpo", "rewards", "libero_tgrpo", "transformers", "peft"},
    "rewards": {"torch", "tgrpo", "libero_gym", "libero_tgrpo", "libero", "robosuite", "mujoco", "transformers", "peft"},
    "tgrpo": {"libero_gym", "rewards", "libero_tgrpo", "libero", "robosuite", "mujoco"},
}
"""Top-level modules each package must never import."""

ALLOWED_ONLY = {"rewards": {"gymnasium", "numpy", "rewards"} | set(sys.stdlib_module_names)}
"""Packages restricted to an explicit list of dependencies."""

OWN_DEPENDENCY = {"libero_gym": "libero", "tgrpo": "torch", "rewards": "gymnasium"}

OPTIONAL_MODULES = {"tgrpo.policies.hf", "tgrpo.policies.tiny_openvla_code"}
"""Modules that need an optional extra (transformers/peft) and are only imported on demand."""

NOT_AT_IMPORT = {"tgrpo": {"transformers", "peft"}}
"""Optional dependencies that importing the package (without its optional modules) must not load."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_import_in_source(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no source files found for {package}"
    offenders = {}
    for f in files:
        bad = _imports(f) & FORBIDDEN[package]
        if package in ALLOWED_ONLY:
            bad |= _imports(f) - ALLOWED_ONLY[package]
        if bad:
            offenders[str(f.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"{package} imports what SPEC §1 forbids: {offenders}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_every_module_loads_nothing_forbidden(package):
    if importlib.util.find_spec(OWN_DEPENDENCY[package]) is None:
        pytest.skip(f"{package}'s own dependency {OWN_DEPENDENCY[package]!r} is not installed here")
    code = (
        "import importlib, pkgutil, sys\n"
        f"pkg = importlib.import_module({package!r})\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        f"    if m.name not in {sorted(OPTIONAL_MODULES)!r}:\n"
        "        importlib.import_module(m.name)\n"
        f"print(','.join(sorted(m for m in {sorted(FORBIDDEN[package] | NOT_AT_IMPORT.get(package, set()))!r} "
        "if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {package} loaded {out.stdout.strip()}"
