"""benchmarks/demo_spread.py: the spread of a real demonstration set and the feedback-gain probe."""

import json

import numpy as np
import pytest
import torch

from benchmarks import demo_spread as ds
from tgrpo.tokenizer import ActionTokenizer


class _ProportionalPolicy:
    """x action = clip(gain * (target - eef) x): what the probe must measure as ``gain`` (a fake for a unit test)."""

    def __init__(self, gain):
        self.gain, self.tokenizer = gain, ActionTokenizer()

    def sample(self, obs, instructions, temperature):
        rel_x = obs["state"][:, ds.REL.start]
        a = np.zeros((len(rel_x), 7), np.float32)
        a[:, 0] = np.clip(self.gain * rel_x, -1, 1)
        return torch.as_tensor(self.tokenizer.encode(a)), None


def test_spread_of_real_expert_demonstrations(demos):
    r = ds.spread(demos)
    close = ds.close_steps(demos)
    assert r["episodes"] == 3 and len(close) == 3 and (close > 0).all()
    assert all((demos.actions[sl, ds.GRIPPER][: c] < 0).all() for sl, c in zip(ds._episodes(demos), close))
    assert r["close_step"][0] == close.min() and r["close_step"][2] == close.max()
    assert r["close_rel_median_mm"][2] < 0  # the end effector is above the object when it closes
    idx = ds.descent_states(demos, 0.04)
    assert idx.size and (demos.actions[idx, ds.GRIPPER] < 0).all()  # the descent: gripper still open


@pytest.mark.parametrize("gain", [0.0, 10.0, 30.0])
def test_the_probe_reads_a_policys_feedback_gain(demos, gain):
    idx = ds.descent_states(demos, 0.04)
    g = ds.feedback_gain(_ProportionalPolicy(gain), demos, idx, 0.01)
    assert np.median(g) == pytest.approx(gain, abs=0.5)  # one action bin is 1/127.5: 0.4 per metre at dx 1 cm


def test_the_command_writes_its_tables_and_rejects_a_bad_shift(demo_cache, tmp_path, capsys):
    files = sorted(str(p) for p in demo_cache.glob("*.npz"))
    assert ds.main(["--demos", *files, "--out", str(tmp_path)]) == 0
    assert "| episodes |" in (tmp_path / "demo_spread.md").read_text()
    assert json.loads((tmp_path / "demo_spread.json").read_text())["sets"]
    with pytest.raises(SystemExit, match="--dx 0.5"):
        ds.main(["--demos", *files, "--dx", "0.5"])
