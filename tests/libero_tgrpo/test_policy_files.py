"""Policy files load without running code: `libero-tgrpo eval evil.pt`, `train --init evil.pt`, load_policy."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces

import libero_gym
from libero_tgrpo.policies import PolicyFileError, build_policy, load_policy, save_policy

ROOT = Path(__file__).resolve().parents[2]
STATE_SPACE = spaces.Dict({"state": spaces.Box(-np.inf, np.inf, (libero_gym.STATE_DIM,), np.float32)})


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_policy_file(path, marker):
    policy, spec = build_policy("state", STATE_SPACE, seed=0)
    torch.save({"format_version": 1, "spec": spec, "state_dict": policy.state_dict(), "info": _Evil(marker)}, path)
    return path


def test_load_policy_refuses_a_crafted_file_naming_it(tmp_path):
    path, marker = _evil_policy_file(tmp_path / "evil.pt", tmp_path / "pwned"), tmp_path / "pwned"
    with pytest.raises(PolicyFileError, match=rf"refused to load '{path}'.*could run arbitrary code"):
        load_policy(path)
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["eval", "{f}"], ["train", "--init", "{f}"]])
def test_cli_never_runs_a_crafted_policy_file(tmp_path, argv):
    path, marker = _evil_policy_file(tmp_path / "evil.pt", tmp_path / "pwned"), tmp_path / "pwned"
    cmd = [sys.executable, "-m", "libero_tgrpo", *[a.format(f=path) for a in argv],
           "--output-dir", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "refused to load" in proc.stderr and str(path) in proc.stderr
    assert not marker.exists()


def test_saved_policies_hold_only_plain_data_and_round_trip(tmp_path):
    policy, spec = build_policy("state", STATE_SPACE, seed=0, hidden=(16,))
    path = save_policy(policy, spec, tmp_path / "policy.pt", stage="sft", success=np.float64(0.5), where=tmp_path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["policy.pt"]
    loaded, spec2, info = load_policy(path)
    assert spec2 == spec and info["success"] == 0.5 and info["where"] == str(tmp_path)
    for (k, a), b in zip(policy.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
