"""The held-out tuning sweep's plan, resumable units and summary (real files; no env for the plumbing)."""

import json
from pathlib import Path

import pytest

from benchmarks import tuning_sweep as ts
from libero_tgrpo.envs import TRAIN_PLACEMENT_OFFSET


def _args(tmp_path, *extra):
    return ["run", "--out-dir", str(tmp_path / "sweep"), "--results-dir", str(tmp_path / "results"), *extra]


def test_plan_puts_each_seeds_sft_first_and_crosses_the_settings():
    settings = ts.settings_grid([1e-4, 3e-5], [0.04], [1.0, 0.5], ["per_step"], [None])
    units = ts.plan([4], [0, 1], settings)
    assert [u.key for u in units[:5]] == [
        "task4_sft_seed0",
        "task4_lr0.0001_beta0.04_temp1_per_step_seed0",
        "task4_lr0.0001_beta0.04_temp0.5_per_step_seed0",
        "task4_lr3e-05_beta0.04_temp1_per_step_seed0",
        "task4_lr3e-05_beta0.04_temp0.5_per_step_seed0",
    ]
    assert len(units) == 10 and units[5].key == "task4_sft_seed1"
    assert ts.Setting(1e-4, 0.04, 1.0, "minibatch", 0.02).key == "lr0.0001_beta0.04_temp1_minibatch_tkl0.02"


def test_settings_reach_the_pipeline_config(tmp_path):
    unit = ts.Unit(4, 1, ts.Setting(3e-5, 0.2, 0.7, "minibatch"))
    size = ts.UnitSize(iterations=3, num_envs=2, eval_placements=4, eval_envs=1)
    cfg = ts._config(unit, size, tmp_path)
    assert (cfg.rl.lr, cfg.rl.kl_beta, cfg.rl.temperature, cfg.rl.update_schedule) == (3e-5, 0.2, 0.7, "minibatch")
    assert (cfg.rl.iterations, cfg.num_envs, cfg.eval.envs, cfg.seed, cfg.task) == (3, 2, 1, 1, 4)
    sft = ts._config(ts.Unit(4, 1), ts.UnitSize(), tmp_path)
    assert sft.rl.lr == 1e-4 and sft.num_envs == 8 and sft.rl.target_kl is None  # the main job's settings
    held = ts._config(ts.Unit(4, 1, ts.Setting(1e-4, 0.04, 1.0, "per_step", 0.05)), size, tmp_path)
    assert held.rl_config(tmp_path).target_kl == 0.05


def test_heldout_placements_are_not_training_placements():
    seeds = ts.heldout_placements(30)
    assert seeds == list(range(ts.HELDOUT_PLACEMENT_OFFSET, ts.HELDOUT_PLACEMENT_OFFSET + 30))
    # a generous run (seed 99, 1000 iterations of 64) still trains below the held-out seeds
    assert TRAIN_PLACEMENT_OFFSET + 99 + 1000 * 64 < min(seeds)
    cfg = ts._config(ts.Unit(4, 0, ts.Setting(1e-4, 0.04, 1.0)), ts.UnitSize(iterations=200_000, num_envs=8),
                     Path("/tmp"))
    with pytest.raises(SystemExit, match="held-out"):
        ts._check_disjoint(cfg)


def _fake_unit(unit, placed, success, kl=None):
    return {"task": unit.task, "seed": unit.seed, "setting_key": "sft" if unit.setting is None else unit.setting.key,
            "setting": None, "success_rate": success, "placed_rate": placed, "placement_seeds": [1, 2],
            "unit_size": {}, "versions": {}, "machine": {},
            "train": None if kl is None else {"ref_kl_max": kl, "env_steps": 100.0, "optimizer_steps": 50.0},
            "timings_s": {"total": 1.0}}


def test_run_skips_finished_units_records_failures_and_summarises(tmp_path, monkeypatch):
    calls = []
    rates = {"sft": (0.2, 0.4), "lr0.0001_beta0.04_temp1_per_step": (0.1, 0.5),
             "lr3e-05_beta0.04_temp1_per_step": (0.5, 0.6)}

    def fake_run_unit(out_dir, unit, size):
        calls.append(unit.key)
        if unit.seed == 1 and unit.setting is not None and unit.setting.lr == 1e-4:
            raise RuntimeError("boom")
        key = "sft" if unit.setting is None else unit.setting.key
        return _fake_unit(unit, *rates[key], kl=None if unit.setting is None else 0.5)

    monkeypatch.setattr(ts, "run_unit", fake_run_unit)
    out = tmp_path / "sweep"
    done = ts.Unit(4, 0)
    out.joinpath("units").mkdir(parents=True)
    done.path(out).write_text(json.dumps(_fake_unit(done, 0.2, 0.4)))
    argv = _args(tmp_path, "--lrs", "1e-4,3e-5", "--kl-betas", "0.04", "--seeds", "0-1", "--eval-placements", "2")
    assert ts.main(argv) == 0
    assert "task4_sft_seed0" not in calls and len(calls) == 5
    assert (out / "failed" / "task4_lr0.0001_beta0.04_temp1_per_step_seed1.json").is_file()
    # a second run retries only the failed unit
    calls.clear()
    ts.main(argv)
    assert calls == ["task4_lr0.0001_beta0.04_temp1_per_step_seed1"]
    summary = json.loads((tmp_path / "results" / "tuning_sweep.json").read_text())
    rows = {r["setting"]: r for r in summary["rows"]}
    assert rows["lr3e-05_beta0.04_temp1_per_step"]["placed_mean"] == pytest.approx(50.0)
    assert rows["lr3e-05_beta0.04_temp1_per_step"]["placed_minus_sft"] == pytest.approx(30.0)
    assert rows["lr0.0001_beta0.04_temp1_per_step"]["below_sft"] == 1  # only seed 0 finished (seed 1 failed)
    assert summary["best"]["setting"] == "lr3e-05_beta0.04_temp1_per_step"
    md = (tmp_path / "results" / "tuning_sweep.md").read_text()
    assert "Failed units" in md and "boom" in md and "never the 50 benchmark states" in md
    assert (tmp_path / "results" / "tuning_sweep.png").is_file()


def test_bad_sweep_values_fail_before_any_unit(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "run_unit", lambda *a: pytest.fail("a unit ran"))
    with pytest.raises(SystemExit, match="--schedules"):
        ts.main(_args(tmp_path, "--schedules", "per_episode"))
    with pytest.raises(Exception, match="lr=-1"):
        ts.main(_args(tmp_path, "--lrs", "-1"))
