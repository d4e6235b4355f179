"""The held-out tuning sweep's plan, resumable units and summary (real files; no env for the plumbing)."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import tuning_sweep as ts
from libero_tgrpo.envs import TRAIN_PLACEMENT_OFFSET
from libero_tgrpo.selection import HELDOUT_PLACEMENT_OFFSET, heldout_placements


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
    assert sft.rl.lr == 3e-5 and sft.num_envs == 8 and sft.rl.target_kl is None  # the main job's settings
    held = ts._config(ts.Unit(4, 1, ts.Setting(1e-4, 0.04, 1.0, "per_step", 0.05)), size, tmp_path)
    assert held.rl_config(tmp_path).target_kl == 0.05


def test_alpha_settings_reach_the_run_normalised_and_paper_keeps_the_old_keys(tmp_path):
    units, _ = ts._plan_from(ts.build_parser().parse_args(_args(
        tmp_path, "--tasks", "2", "--seeds", "0", "--lrs", "3e-5", "--alphas", "paper,1:3,0:1")))
    assert [u.setting_key for u in units] == ["sft", "lr3e-05_beta0.04_temp1_per_step",
                                              "lr3e-05_beta0.04_temp1_per_step_a1-3",
                                              "lr3e-05_beta0.04_temp1_per_step_a0-1"]
    alphas = [ts._config(u, ts.UnitSize(), tmp_path).alphas for u in units[1:]]
    # Task2's paper ratio (10 : 1), not the runs' default chosen by this study (HELDOUT_ALPHAS)
    assert alphas[0] == pytest.approx((0.90909, 0.09091), abs=1e-4)
    assert alphas[1:] == [(0.25, 0.75), (0.0, 1.0)]
    for bad in ("0:0", "1", "a:b", "-1:2", "paper,1:1:1"):
        with pytest.raises(SystemExit, match=f"--alphas '{bad}'"):
            ts.main(_args(tmp_path, f"--alphas={bad}"))


def test_heldout_placements_are_not_training_placements():
    seeds = heldout_placements(30)
    assert seeds == list(range(HELDOUT_PLACEMENT_OFFSET, HELDOUT_PLACEMENT_OFFSET + 30))
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
    argv = _args(tmp_path, "--tasks", "4", "--lrs", "1e-4,3e-5", "--kl-betas", "0.04", "--seeds", "0-1",
                 "--eval-placements", "2")
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


# ---------------------------------------------------------------------------------------------- SFT regime study
def test_sft_study_units_cross_demos_epochs_and_widths_and_reach_the_config(tmp_path):
    grid = ts.sft_grid([20, 100], [100, 300], [(128, 128), (256, 256)])
    units = ts.sft_plan([2, 4], [0], grid)
    assert len(units) == 16 and all(u.setting is None for u in units)
    # the largest demonstration set of a (task, seed) first: the smaller ones are cut from its cache
    assert units[0].key == "task2_sft_d100_e100_h128x128_u-success_seed0"  # demonstrations until success
    assert [u.sft.num_demos for u in units[:8]] == [100] * 4 + [20] * 4
    assert units[-1].key == "task4_sft_d20_e300_h256x256_u-success_seed0"
    big = ts.Unit(4, 1, sft=ts.SFTSetting(100, 300, (256, 256)))
    cfg = ts._config(big, ts.UnitSize(), tmp_path)
    assert (cfg.demos.num_demos, cfg.sft.epochs, cfg.hidden, cfg.seed) == (100, 300, (256, 256), 1)
    assert big.sft_dir(tmp_path) == tmp_path / "sft" / "task4_seed1_d100_e300_h256x256_u-success"
    # the main job's own SFT setting shares the SFT policy of the RL units (trained once)
    main = ts.Unit(4, 1, sft=ts.SFTSetting.main_job())
    assert main.sft_dir(tmp_path) == ts.Unit(4, 1).sft_dir(tmp_path) and main.key != ts.Unit(4, 1).key
    assert ts.Unit(4, 1).key == "task4_sft_seed1"  # the RL study's keys are unchanged
    with pytest.raises(ValueError, match="not both"):
        ts.Unit(4, 0, ts.Setting(1e-4, 0.04, 1.0), sft=ts.SFTSetting(20, 100, (128, 128)))


def _study_unit(task, seed, setting, success, placed):
    u = ts.Unit(task, seed, sft=setting)
    return {"task": task, "seed": seed, "setting_key": u.setting_key, "setting": None,
            "sft_setting": {"num_demos": setting.num_demos, "epochs": setting.epochs, "hidden": list(setting.hidden)},
            "success_rate": success, "placed_rate": placed, "placement_seeds": [1, 2], "unit_size": {},
            "versions": {}, "machine": {}, "train": None, "timings_s": {"sft": 10.0, "total": 20.0}}


STUDY_SUCCESS = {  # held-out LIBERO success per (setting key, task); placed is 10 points lower
    "d50_e100_h128x128": {2: 0.80, 4: 0.70},
    "d100_e100_h128x128": {2: 0.90, 4: 0.82},  # mean 86: the smallest that reaches 85
    "d100_e300_h128x128": {2: 0.94, 4: 0.90},  # mean 92
    "d200_e100_h128x128": {2: 0.96, 4: 0.94},  # mean 95
}


def test_sft_study_runs_resumably_and_its_rule_picks_the_smallest_setting_reaching_the_target(tmp_path, monkeypatch):
    calls = []

    def fake_run_unit(out_dir, unit, size):
        calls.append(unit.key)
        assert unit.sft is not None and unit.setting is None  # SFT only
        rate = STUDY_SUCCESS[unit.sft.key][unit.task] + 0.02 * (unit.seed - 0.5)  # seeds 0/1: -1 / +1 point
        return _study_unit(unit.task, unit.seed, unit.sft, rate, rate - 0.1)

    monkeypatch.setattr(ts, "run_unit", fake_run_unit)
    argv = _args(tmp_path, "--study", "sft", "--tasks", "2,4", "--seeds", "0-1", "--num-demos", "50,100,200",
                 "--sft-epochs", "100,300", "--hidden", "128x128", "--demo-until", "is_placed")
    # d50_e300 and d200_e300 are not in STUDY_SUCCESS: they fail, are recorded, and the study goes on
    assert ts.main(argv) == 0
    assert len(calls) == 24 and all("lr" not in c for c in calls)
    assert (tmp_path / "sweep" / "failed" / "task2_sft_d50_e300_h128x128_seed0.json").is_file()
    calls.clear()
    ts.main(argv)
    assert len(calls) == 8 and all("d50_e300" in c or "d200_e300" in c for c in calls)  # the failed ones again

    summary = json.loads((tmp_path / "results" / "tuning_sweep.json").read_text())
    study = summary["sft_study"]
    assert summary["rows"] == []  # no RL units in this sweep
    row = next(r for r in study["rows"] if r["task"] == 4 and r["sft"] == "d100_e100_h128x128")
    assert row["success_mean"] == pytest.approx(82.0) and row["success_std"] == pytest.approx(2 ** 0.5)
    assert row["placed_mean"] == pytest.approx(72.0) and row["n"] == 2
    assert [b["sft"] for b in study["by_setting"]] == ["d50_e100_h128x128", "d100_e100_h128x128",
                                                       "d100_e300_h128x128", "d200_e100_h128x128"]
    choice = study["choice"]
    assert choice["reached"] and choice["setting"] == "d100_e100_h128x128"
    assert choice["success_mean"] == pytest.approx(86.0) and choice["placed_mean"] == pytest.approx(76.0)
    md = (tmp_path / "results" / "tuning_sweep.md").read_text()
    assert "## SFT regime study" in md and "## RL settings" not in md
    assert "| T4 | d100_e100_h128x128 | 2 | 82.0 ± 1.4 | 72.0 ± 1.4 | 10 |" in md
    assert ("Chosen: **d100_e100_h128x128** (100 demonstrations, 100 epochs, hidden 128x128, demonstrations through "
            "the release)") in md
    assert "PAPER_SFT = SFTSetting(num_demos=100, epochs=100, hidden=(128, 128), demo_until='is_placed')" in md

    # the target is the summary's: a higher one picks a larger setting; one out of reach names the best
    ts.main(["summary", "--out-dir", str(tmp_path / "sweep"), "--results-dir", str(tmp_path / "r2"),
             "--sft-target", "93"])
    assert json.loads((tmp_path / "r2" / "tuning_sweep.json").read_text())["sft_study"]["choice"]["setting"] == \
        "d200_e100_h128x128"
    ts.main(["summary", "--out-dir", str(tmp_path / "sweep"), "--results-dir", str(tmp_path / "r3"),
             "--sft-target", "99"])
    choice = json.loads((tmp_path / "r3" / "tuning_sweep.json").read_text())["sft_study"]["choice"]
    assert not choice["reached"] and choice["setting"] is None and choice["best"]["setting"] == "d200_e100_h128x128"
    assert "No setting reaches it; the highest is d200_e100_h128x128" in (tmp_path / "r3" / "tuning_sweep.md").read_text()
    with pytest.raises(SystemExit, match="--sft-target 150"):
        ts.main(["summary", "--out-dir", str(tmp_path / "sweep"), "--sft-target", "150"])


def test_sft_study_choice_needs_every_task_of_the_study():
    s_small, s_big = ts.SFTSetting(50, 100, (128, 128)), ts.SFTSetting(400, 100, (128, 128))
    units = [_study_unit(2, 0, s_small, 0.95, 0.9),  # reaches the target but was run on Task2 only
             _study_unit(2, 0, s_big, 0.9, 0.8), _study_unit(4, 0, s_big, 0.88, 0.8)]
    choice = ts.choose_sft_setting(ts.sft_study_rows(units), 85.0)
    assert choice["setting"] == "d400_e100_h128x128" and choice["tasks"] == [2, 4]
    assert ts.choose_sft_setting([], 85.0) is None


def test_the_demonstrations_end_is_a_dimension_of_the_sft_study(tmp_path):
    """--demo-until is_placed,is_success doubles the grid; the is_success settings get their own key and config."""
    grid = ts.sft_grid([20], [100], [(128, 128)], ("is_placed", "is_success"))
    assert [g.key for g in grid] == ["d20_e100_h128x128", "d20_e100_h128x128_u-success"]
    assert grid[1] == ts.SFTSetting.main_job()  # the weak regime: demonstrations until LIBERO's success (default)
    assert grid[1].overrides()["demos.until"] == "is_success" and "LIBERO's success" in grid[1].describe()
    assert ts.SFTSetting.of({"num_demos": 20, "epochs": 100, "hidden": [128, 128]}) == grid[0]  # older units
    units, _ = ts._plan_from(ts.build_parser().parse_args(_args(
        tmp_path, "--study", "sft", "--num-demos", "20", "--sft-epochs", "100", "--demo-until", "is_placed,is_success")))
    assert len(units) == 2 * 3 * 3  # 2 settings x the default study's 3 tasks x 3 seeds
    with pytest.raises(SystemExit, match="--demo-until 'is_done'"):
        ts.main(_args(tmp_path, "--study", "sft", "--demo-until", "is_done"))


def test_the_experts_noise_is_a_dimension_of_the_sft_study(tmp_path):
    """--demo-noise 0,0.2 doubles the grid; the noisy setting has its own key, SFT directory and demonstrations."""
    grid = ts.sft_grid([20], [100], [(128, 128)], noise=(0.0, 0.2))
    assert [g.key for g in grid] == ["d20_e100_h128x128_u-success", "d20_e100_h128x128_u-success_nz0.2"]
    assert grid[0] == ts.SFTSetting.main_job() and grid[1] != grid[0]  # the weak regime's expert is noise-free
    assert "expert noise 0.2" in grid[1].describe() and ts.SFTSetting.of(asdict(grid[1])) == grid[1]
    noisy = ts.Unit(2, 0, sft=grid[1])
    assert ts._config(noisy, ts.UnitSize(), tmp_path).demos.demo_noise == 0.2
    assert noisy.sft_dir(tmp_path).name == "task2_seed0_d20_e100_h128x128_u-success_nz0.2"
    assert ts.Unit(2, 0, sft=grid[0]).sft_dir(tmp_path) == ts.Unit(2, 0).sft_dir(tmp_path)
    units, _ = ts._plan_from(ts.build_parser().parse_args(_args(
        tmp_path, "--study", "sft", "--num-demos", "20", "--sft-epochs", "100", "--demo-noise", "0,0.2")))
    assert sorted({u.sft.demo_noise for u in units}) == [0.0, 0.2] and len(units) == 2 * 3 * 3
    # the smallest setting that reaches the target wins; at equal size the noise-free one
    units = [_study_unit(2, 0, grid[1], 0.9, 0.5), _study_unit(2, 0, grid[0], 0.9, 0.6)]
    for u, g in zip(units, grid[::-1]):
        u["sft_setting"] = asdict(g)  # as run_unit records it
    rows = ts.sft_study_rows(units)
    assert ts.choose_sft_setting(rows, 85.0)["setting"] == grid[0].key
    for bad in ("-0.1", "a"):
        with pytest.raises(SystemExit, match=repr(bad) if bad != "a" else "numbers"):
            ts.main(_args(tmp_path, "--study", "sft", "--demo-noise", bad))


@pytest.mark.parametrize("field, grid_arg, flag, values, other, suffix, described, bad", [
    ("expert_close_steps", "close_steps", "--expert-close-steps", (6, 0), "0", "_cs0", "expert close_steps 0", "x"),
    ("expert_lift", "lift", "--expert-lift", ("timer", "still"), "still", "_lift-still", "expert lift rule still",
     "soon"),
])
def test_when_the_expert_lifts_is_a_dimension_of_the_sft_study(tmp_path, field, grid_arg, flag, values, other, suffix,
                                                                described, bad):
    """--expert-close-steps 6,0 and --expert-lift timer,still double the grid; the other expert has its own key,
    SFT directory and config; at equal results the default expert is chosen; a unit recorded before the dimension
    reads as the default."""
    grid = ts.sft_grid([100], [100], [(128, 128)], noise=(0.2,), **{grid_arg: values})
    assert [g.key for g in grid] == ["d100_e100_h128x128_u-success_nz0.2", "d100_e100_h128x128_u-success_nz0.2" + suffix]
    assert described in grid[1].describe() and described.rsplit(" ", 1)[0] not in grid[0].describe()
    old = asdict(grid[0])
    del old[field]
    assert ts.SFTSetting.of(old) == grid[0] and ts.SFTSetting.of(asdict(grid[1])) == grid[1]
    unit = ts.Unit(4, 0, sft=grid[1])
    assert getattr(ts._config(unit, ts.UnitSize(), tmp_path).demos, field) == values[1]
    assert unit.sft_dir(tmp_path).name == "task4_seed0_d100_e100_h128x128_u-success_nz0.2" + suffix
    units, _ = ts._plan_from(ts.build_parser().parse_args(_args(
        tmp_path, "--study", "sft", "--num-demos", "100", "--sft-epochs", "100", flag, ",".join(map(str, values)))))
    assert {getattr(u.sft, field) for u in units} == set(values) and len(units) == 2 * 3 * 3
    units = [_study_unit(4, 0, grid[1], 0.9, 0.5), _study_unit(4, 0, grid[0], 0.9, 0.6)]
    for u, g in zip(units, grid[::-1]):
        u["sft_setting"] = asdict(g)
    assert ts.choose_sft_setting(ts.sft_study_rows(units), 85.0)["setting"] == grid[0].key
    with pytest.raises(SystemExit, match=f"{flag} '{bad}'"):
        ts.main(_args(tmp_path, "--study", "sft", flag, bad))


def test_bad_sft_study_values_fail_before_any_unit(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "run_unit", lambda *a: pytest.fail("a unit ran"))
    with pytest.raises(SystemExit, match="--num-demos '0,20'"):
        ts.main(_args(tmp_path, "--study", "sft", "--num-demos", "0,20"))
    with pytest.raises(SystemExit, match="--hidden '128xa'"):
        ts.main(_args(tmp_path, "--study", "sft", "--hidden", "128xa"))


def test_a_tiny_real_sft_study_unit(tmp_path, monkeypatch, demo_cache):
    # the real SFT + held-out evaluation path of a study unit: 3 cached demonstrations, 2 epochs, 2 placements
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "demos").symlink_to(demo_cache)
    unit = ts.Unit(4, 0, sft=ts.SFTSetting(3, 2, (16,)))
    rec = ts.run_unit(tmp_path / "sweep", unit, ts.UnitSize(eval_placements=2, eval_envs=1, quiet=True))
    assert rec["setting_key"] == "sft_d3_e2_h16_u-success" and rec["sft_setting"] == {"num_demos": 3, "epochs": 2,
                                                                            "hidden": (16,), "demo_until": "is_success",
                                                                            "demo_noise": 0.0,
                                                                            "expert_close_steps": 6,
                                                                            "expert_lift": "timer"}
    assert rec["config"]["demos"]["until"] == "is_success" and rec["config"]["demos"]["demo_noise"] == 0.0
    assert rec["config"]["demos"]["expert_close_steps"] == 6 and rec["config"]["demos"]["expert_lift"] == "timer"
    assert rec["placement_seeds"] == heldout_placements(2) and "train" not in rec
    assert rec["config"]["demos"]["num_demos"] == 3 and rec["config"]["hidden"] == [16]
    assert (unit.sft_dir(tmp_path / "sweep") / "policy.pt").is_file() and "sft" in rec["timings_s"]
    assert 0.0 <= rec["placed_rate"] <= rec["success_rate"] <= 1.0
