"""tgrpo stands alone: importing it (and all its modules) pulls in no environment or reward package."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("libero_gym", "rewards", "libero", "robosuite", "transformers", "peft")


def test_tgrpo_imports_no_env_reward_or_hf_package():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tgrpo, tgrpo.baselines; "
        "import pkgutil, importlib; [importlib.import_module('tgrpo.' + m.name) "
        "for m in pkgutil.iter_modules(tgrpo.__path__) if m.name not in ('hf', 'openvla')]; "
        f"print(sorted(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_api():
    import tgrpo

    for name in (
        "train",
        "TGRPOConfig",
        "ActionTokenizer",
        "TokenActionPolicy",
        "MLPTokenPolicy",
        "step_advantages",
        "trajectory_advantages",
        "tgrpo_advantages",
        "tgrpo_loss",
        "collect_group",
        "evaluate",
    ):
        assert hasattr(tgrpo, name), name
