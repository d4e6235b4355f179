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


@pytest.mark.parametrize("kind", ["state", "vision"])
def test_safetensors_policy_files_round_trip_without_pickle(tmp_path, kind):
    import json
    import struct

    if kind == "state":
        policy, spec = build_policy("state", STATE_SPACE, seed=0, hidden=(16,))
    else:
        space = spaces.Dict({"agentview": spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "wrist": spaces.Box(0, 255, (32, 32, 3), np.uint8),
                             "state": spaces.Box(-np.inf, np.inf, (libero_gym.STATE_DIM,), np.float32)})
        policy, spec = build_policy("vision", space, seed=0, image_size=32, channels=(4, 8))
    path = save_policy(policy, spec, tmp_path / "policy.safetensors", stage="sft", task=4, success=np.float64(0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.json", "policy.safetensors"]
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # safetensors: a JSON header, then the raw tensor bytes
    assert header["__metadata__"]["format"] == "libero_tgrpo.policy"
    assert set(header) - {"__metadata__"} == set(policy.state_dict())
    config = json.loads((tmp_path / "policy.json").read_text())
    assert config["spec"] == json.loads(json.dumps(spec)) and config["info"]["success"] == 0.5
    for name in (path, tmp_path / "policy.json"):  # either file of the pair
        loaded, spec2, info = load_policy(name)
        assert spec2 == json.loads(json.dumps(spec)) and info["stage"] == "sft" and info["task"] == 4
        for (k, a), b in zip(policy.state_dict().items(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b), k


def test_a_safetensors_file_without_its_json_is_a_clear_error(tmp_path):
    policy, spec = build_policy("state", STATE_SPACE, seed=0, hidden=(16,))
    path = save_policy(policy, spec, tmp_path / "p.safetensors")
    (tmp_path / "p.json").unlink()
    with pytest.raises(PolicyFileError, match=r"p\.json.*missing"):
        load_policy(path)
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(PolicyFileError, match="no 'spec'"):
        load_policy(path)


def test_eval_reads_a_safetensors_policy(tmp_path):
    import json

    from libero_tgrpo.cli import main

    policy, spec = build_policy("state", STATE_SPACE, seed=0, hidden=(16,))
    path = save_policy(policy, spec, tmp_path / "policy.safetensors", stage="sft", task=4, obs_mode="state")
    assert main(["eval", str(path), "--quiet", "--states", "0", "--eval-max-steps", "3",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert res["summary"]["episodes"] == 1 and res["policy_info"]["stage"] == "sft"
