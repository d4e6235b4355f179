"""The import boundaries of the three packages (SPEC §1), checked statically and at import time."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "libero_gym": {"torch", "tgrpo", "rewards", "transformers", "peft"},
    "rewards": {"torch", "tgrpo", "libero_gym", "libero", "robosuite", "mujoco", "transformers", "peft"},
    "tgrpo": {"libero_gym", "rewards", "libero", "robosuite", "mujoco"},
}


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
    offenders = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package]) for f in files if _imports(f) & FORBIDDEN[package]
    }
    assert not offenders, f"{package} imports what SPEC §1 forbids: {offenders}"


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_nothing_forbidden(package):
    deps = {"libero_gym": "libero", "tgrpo": "torch", "rewards": "gymnasium"}[package]
    if importlib.util.find_spec(deps) is None:
        pytest.skip(f"{package}'s own dependency {deps!r} is not installed in this environment")
    code = (
        f"import sys, {package}\n"
        f"bad = sorted(m for m in {sorted(FORBIDDEN[package])!r} if m in sys.modules)\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "", f"importing {package} loaded {out.stdout.strip()}"
