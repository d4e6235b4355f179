"""A tiny end-to-end run on the real env: demos -> SFT -> TGRPO (2 iterations) -> evaluation, and resume."""

import dataclasses
import json
import shlex
import shutil

import pytest
import torch

from libero_tgrpo.cli import main, parse
from libero_tgrpo.config import DemoConfig, EvalConfig, PipelineConfig
from libero_tgrpo.demo_set import load_demos, save_demos
from libero_tgrpo.demos import demos_cache_path
from libero_tgrpo.files import RunDirError
from libero_tgrpo.options import load_config
from libero_tgrpo.pipeline import run_main_job
from libero_tgrpo.policies import load_policy
from libero_tgrpo.rundir import file_digest


def _tiny(tmp_path, demo_cache, **kw):
    base = PipelineConfig(
        output_dir=str(tmp_path / "main"),
        demos=DemoConfig(num_demos=3, demo_cache=str(demo_cache)),
        hidden=(32, 32),
        num_envs=2,
        eval=EvalConfig(states=(0, 1), max_steps=10),
        video=False,
        progress=False,
    )
    return base.replace(**{"sft.epochs": 3, "rl.iterations": 2, "rl.max_steps": 8, **kw})


def test_tiny_main_job_end_to_end(tmp_path, demo_cache, monkeypatch):
    demo_cache = shutil.copytree(demo_cache, tmp_path / "demo_cache")  # this run regenerates its cache file
    threads = torch.get_num_threads()
    try:
        summary = run_main_job(_tiny(tmp_path, demo_cache))
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "main"
    for name in ("config.json", "sft/policy.pt", "sft/sft_metrics.jsonl", "eval_sft.json", "tgrpo/metrics.jsonl",
                 "tgrpo/checkpoint.pt", "tgrpo/policy.pt", "eval_tgrpo.json", "results.md", "summary.json"):
        assert (out / name).is_file(), name
    assert summary["alphas"] == [0.35, 0.65] and summary["seed"] == 0
    assert set(summary["timings_s"]) >= {"demos", "sft", "eval_sft", "tgrpo", "eval_tgrpo", "total"}
    assert summary["eval"]["sft"]["episodes"] == 2 and summary["eval"]["tgrpo"]["episodes"] == 2
    assert "mujoco" in summary["versions"]
    rows = [json.loads(line) for line in (out / "tgrpo/metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    assert "| SFT |" in (out / "results.md").read_text()
    policy, spec, info = load_policy(out / "tgrpo/policy.pt")
    assert spec["kind"] == "state" and info["stage"] == "tgrpo"

    # the resolved config and the command the run wrote give the same config back
    cfg = _tiny(tmp_path, demo_cache)
    command = (out / "command.txt").read_text().strip()
    assert command.startswith("libero-tgrpo run ") and "--rl-epochs" not in command
    assert parse(shlex.split(command)[1:])[1].options == cfg
    assert load_config(out / "config.yaml") == cfg
    assert parse(["run", "--config", str(out / "config.yaml")])[1].options == cfg
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    assert summary["command"] == command

    # recording a finished run under a name, with the command that reproduces it
    import libero_tgrpo.paths
    from libero_tgrpo.pipeline import record_run

    monkeypatch.setattr(libero_tgrpo.paths, "results_dir", lambda: tmp_path / "results")
    (tmp_path / "results").mkdir()
    md = record_run(out, "tiny_job", say=lambda m: None).read_text()
    assert "| SFT |" in md and "changed LIBERO's success rate by" in md and "--num-envs 2" in md
    assert "| policy | LIBERO success | placed |" in md and "and the placed rate by" in md
    assert summary["placed_rate"]["sft"] == summary["eval"]["sft"]["placed_rate"]
    assert json.loads((tmp_path / "results/tiny_job.json").read_text())["seed"] == 0
    with pytest.raises(ValueError, match="record name"):
        record_run(out, "../x")

    # the demo cache is made again with the same episodes: other file bytes (generation time), same demos
    cache_file = demos_cache_path(demo_cache, 4, 3, 0)  # the main job's set (the session's cache holds others)
    assert cache_file.is_file()
    before = file_digest(cache_file)
    cached = load_demos(cache_file)
    cache_file.unlink()
    save_demos(dataclasses.replace(cached, meta={**cached.meta, "generation_s": -1.0}), cache_file)
    assert file_digest(cache_file) != before

    # resume: every stage is on disk, TGRPO continues to 3 iterations from its checkpoint. The rows of the
    # first two iterations stay as written (a restart from scratch would rewrite them, timings included).
    written = (out / "tgrpo/metrics.jsonl").read_text().splitlines()
    summary2 = run_main_job(_tiny(tmp_path, demo_cache, resume=True, **{"rl.iterations": 3}))
    lines = (out / "tgrpo/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [0, 1, 2]
    assert lines[:2] == written
    assert summary2["eval"]["sft"] == summary["eval"]["sft"]

    # the directory belongs to this run: a new run, or a resume with another task or seed, is refused before
    # any work, naming each differing option with its old and new value
    with pytest.raises(RunDirError, match="holds another run"):
        run_main_job(_tiny(tmp_path, demo_cache))
    with pytest.raises(RunDirError) as e:
        run_main_job(_tiny(tmp_path, demo_cache, resume=True, task=5, seed=1))
    assert "task: 4 -> 5" in str(e.value) and "seed: 0 -> 1" in str(e.value) and "alphas: [0.35, 0.65] -> [" in str(
        e.value)
    assert (out / "tgrpo/metrics.jsonl").read_text().splitlines() == lines
    # other episodes in the cache (one action changed) are refused, naming the demos digest
    actions = cached.actions.copy()
    actions[0, 0] = -actions[0, 0] if actions[0, 0] else 0.5
    save_demos(dataclasses.replace(cached, actions=actions), cache_file)
    with pytest.raises(RunDirError, match=r"demos digest: episodes-sha256:[0-9a-f]+ -> episodes-sha256:"):
        run_main_job(_tiny(tmp_path, demo_cache, resume=True, **{"rl.iterations": 3}))
    assert (out / "tgrpo/metrics.jsonl").read_text().splitlines() == lines


def test_cli_stages(tmp_path, demo_cache, capsys):
    common = ["--task", "4", "--quiet", "--num-demos", "3", "--demo-cache", str(demo_cache)]
    assert main(["demos", *common, "--out", str(tmp_path / "d.npz")]) == 0
    assert main(["sft", "--task", "4", "--quiet", "--demos", str(tmp_path / "d.npz"), "--hidden", "16",
                 "--sft-epochs", "2", "--output-dir", str(tmp_path / "sft")]) == 0
    assert main(["train", "--task", "4", "--quiet", "--init", str(tmp_path / "sft/policy.pt"), "--num-envs", "2",
                 "--iterations", "1", "--max-steps", "5", "--method", "traj_only",
                 "--output-dir", str(tmp_path / "train")]) == 0
    assert main(["eval", str(tmp_path / "train"), "--quiet", "--states", "0-1", "--eval-max-steps", "5",
                 "--output-dir", str(tmp_path / "eval")]) == 0
    res = json.loads((tmp_path / "eval/eval.json").read_text())
    assert res["summary"]["episodes"] == 2 and res["policy_info"]["stage"] == "tgrpo"
    assert (tmp_path / "train/init_policy.pt").is_file() and (tmp_path / "train/policy.pt").is_file()
    printed = capsys.readouterr().out
    assert '"success_rate"' in printed and '"placed_rate"' in printed


@pytest.mark.parametrize("kw,needle", [({"num_envs": 1}, "num_envs=1"), ({"task": 0}, "1-10"),
                                       ({"eval.states": (60,)}, "0-49"), ({"method": "grpo"}, "method='grpo'"),
                                       ({"rl.lr": -1.0}, "lr=-1.0"), ({"sft.lr": 0.0}, "SFTConfig.lr=0.0"),
                                       ({"demos.num_demos": 0}, "num_demos=0"), ({"eval.envs": 0}, "eval_envs=0"),
                                       ({"alpha1": -1.0}, "alpha1=-1.0"), ({"video_state": 50}, "video_state=50"),
                                       ({"method": "ppo", "ppo.gamma": 0.0}, "PPOConfig.gamma=0.0")])
def test_bad_config(kw, needle):
    with pytest.raises(ValueError, match=needle):
        PipelineConfig().replace(**kw)


def test_stage_configs_are_composed_from_the_parts():
    cfg = PipelineConfig(seed=3, num_envs=4).replace(**{"rl.lr": 3e-5, "rl.iterations": 7, "ppo.epochs": 2})
    t = cfg.rl_config("x/tgrpo")
    assert (t.alpha1, t.alpha2) == (0.35, 0.65) and t.seed == 3 and t.lr == 3e-5 and t.iterations == 7
    assert t.output_dir == "x/tgrpo" and t.epochs == 1
    p = cfg.replace(method="ppo").rl_config("x/ppo")
    assert type(p).__name__ == "PPOConfig" and p.lr == 3e-5 and p.iterations == 7 and p.epochs == 2
    assert p.kl_beta == cfg.rl.kl_beta and p.seed == 3
    assert cfg.sft_config().seed == 3 and cfg.sft_config().epochs == cfg.sft.epochs


@pytest.mark.slow
@pytest.mark.render
def test_vision_policy_through_the_same_pipeline(tmp_path):
    summary = run_main_job(_tiny(tmp_path, tmp_path / "demos", policy="vision", hidden=(32,),
                                 **{"demos.num_demos": 2, "sft.epochs": 1, "rl.iterations": 1, "rl.max_steps": 4,
                                    "eval.max_steps": 4, "eval.states": (0,)}))
    assert summary["policy"] == "vision" and summary["eval"]["tgrpo"]["episodes"] == 1
    _, spec, info = load_policy(tmp_path / "main/tgrpo/policy.pt")
    assert spec["kind"] == "vision" and info["obs_mode"] == "rgb_state"
