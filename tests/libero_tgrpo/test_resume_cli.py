"""``libero-tgrpo train --resume`` after a SIGKILL on the real env continues the run exactly.

Two runs of the same command: one uninterrupted, one SIGKILLed (with its env workers) after its first
checkpoint and resumed with ``--resume``. The resumed run must end with the same metrics and the same
trained policy, bit for bit, as the uninterrupted one; it must not redo the iterations that were on disk
(their rows, timings included, are left as the killed run wrote them). For the vision policy the KL
penalty reads its reference network, so equal ``losses/ref_kl`` rows and weights after the resume show that
the reference network was restored, not rebuilt from the weights at the time of the kill.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import tgrpo
from libero_tgrpo.policies import load_policy

ITERATIONS = 3


def _command(out, policy):
    return [
        sys.executable, "-m", "libero_tgrpo", "train", "--task", "4", "--quiet", "--policy", policy,
        "--num-envs", "2", "--iterations", str(ITERATIONS), "--max-steps", "6", "--seed", "0",
        "--output-dir", str(out),
    ]


def _rows(out):
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _without_timings(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def _run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _assert_same_weights(a, b):
    pa, _, _ = load_policy(a)
    pb, _, _ = load_policy(b)
    sa, sb = pa.state_dict(), pb.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("policy", ["state", pytest.param("vision", marks=pytest.mark.render)])
def test_resume_after_sigkill_continues_exactly(tmp_path, policy):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(_command(straight, policy))
    expected = _rows(straight)
    assert [r["iteration"] for r in expected] == list(range(ITERATIONS))

    proc = subprocess.Popen(
        _command(killed, policy), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 600
        while not ((killed / "checkpoint.pt").exists() and _rows(killed)) and proc.poll() is None:
            assert time.monotonic() < deadline, "the run wrote no checkpoint in 10 minutes"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the trainer and its env workers, as an OOM kill or power cut would
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stderr.close()
    # a row is written before its iteration's checkpoint: the rows up to the checkpoint are the finished ones
    finished = tgrpo.load_checkpoint(killed / "checkpoint.pt")["iteration"] + 1
    before = _rows(killed)[:finished]
    assert 1 <= finished < ITERATIONS, f"the kill came too late to test a resume: {finished} iterations done"
    assert not (killed / "policy.pt").exists()

    _run(_command(killed, policy) + ["--resume"])
    after = _rows(killed)
    # the finished rows of the killed run are kept as they were (a restart from scratch rewrites their timings)
    assert after[:finished] == before
    assert _without_timings(after) == _without_timings(expected)
    _assert_same_weights(killed / "policy.pt", straight / "policy.pt")
