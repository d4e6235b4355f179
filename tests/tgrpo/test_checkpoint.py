"""Atomic checkpoints and resuming a run killed with SIGKILL."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from tgrpo_fakes import make_vec_env, small_config

import tgrpo
from tgrpo.checkpoint import load_checkpoint, save_checkpoint

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONFIG = dict(max_steps=8, checkpoint_interval=1, log_formats=("jsonl", "csv"), seed=7)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "ck" / "checkpoint.pt"
    save_checkpoint(path, {"a": torch.arange(3)})
    save_checkpoint(path, {"a": torch.arange(4)})
    assert torch.equal(load_checkpoint(path)["a"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]


def _run_killed(out_dir: Path, min_iteration: int) -> int:
    """Start a long training run in a subprocess, SIGKILL it once a checkpoint passes ``min_iteration``."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(ROOT)!r}, {str(HERE)!r}]
        import tgrpo
        from tgrpo_fakes import make_vec_env
        cfg = tgrpo.TGRPOConfig(iterations=100000, output_dir={str(out_dir)!r}, progress_bar=False, plot=False,
                                **{CONFIG!r})
        tgrpo.train(make_vec_env(4, threshold=0.5), None, cfg)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE)
    ckpt = out_dir / "checkpoint.pt"
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            if ckpt.exists() and load_checkpoint(ckpt)["iteration"] >= min_iteration:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the training subprocess wrote no checkpoint in time")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return int(load_checkpoint(ckpt)["iteration"])


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    killed_dir = tmp_path / "killed"
    last = _run_killed(killed_dir, min_iteration=2)
    total = last + 3

    # resume the killed run to `total` iterations
    envs = make_vec_env(4, threshold=0.5)
    resumed = tgrpo.train(
        envs,
        None,
        tgrpo.TGRPOConfig(
            iterations=total,
            output_dir=str(killed_dir),
            resume=True,
            progress_bar=False,
            plot=False,
            **CONFIG,
        ),
    )
    # the same run without interruption
    straight = tgrpo.train(
        make_vec_env(4, threshold=0.5),
        None,
        tgrpo.TGRPOConfig(
            iterations=total, output_dir=str(tmp_path / "straight"), progress_bar=False, plot=False, **CONFIG
        ),
    )
    for a, b in zip(resumed.policy.state_dict().values(), straight.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    ck_resumed = load_checkpoint(killed_dir / "checkpoint.pt")
    ck_straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    opt_r, opt_s = ck_resumed["optimizer"]["state"], ck_straight["optimizer"]["state"]
    assert opt_r.keys() == opt_s.keys()
    for k in opt_r:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(opt_r[k][name], opt_s[k][name])
    # the metrics file holds each iteration exactly once, with the same rollout results
    rows = [json.loads(line) for line in open(killed_dir / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == list(range(total))
    ref = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
    assert [r["charts/mean_return"] for r in rows] == [r["charts/mean_return"] for r in ref]
    assert len((killed_dir / "metrics.csv").read_text().strip().splitlines()) == total + 1


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    result = tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=2, resume=True))
    assert [r["iteration"] for r in result.history] == [0, 1]
    # resuming a finished run with more iterations continues it
    result = tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=3, resume=True))
    assert [r["iteration"] for r in result.history] == [0, 1, 2]
