"""`rewards` depends only on gymnasium, numpy and the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import rewards

ALLOWED = {"gymnasium", "numpy", "rewards"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_rewards_imports_only_gymnasium_numpy_and_the_standard_library():
    files = sorted(Path(rewards.__file__).parent.rglob("*.py"))
    assert files
    for path in files:
        outside = imported_modules(path) - ALLOWED - set(sys.stdlib_module_names)
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_importing_rewards_loads_no_other_project_package_nor_torch():
    code = (
        "import sys, rewards, rewards.testing; "
        "print(sorted(m for m in ('torch', 'tgrpo', 'libero_gym', 'libero', 'robosuite', 'mujoco') if m in sys.modules))"
    )
    root = Path(rewards.__file__).parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    assert out.strip() == "[]"
