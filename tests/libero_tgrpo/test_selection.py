"""Held-out selection: the choice rule, the selection points, and runs (TGRPO, PPO) that keep their best policy."""

import json

import pytest
import torch

from libero_tgrpo.config import EvalConfig, PipelineConfig
from libero_tgrpo.policies import build_policy, load_policy
from libero_tgrpo.selection import (
    HELDOUT_PLACEMENT_OFFSET,
    HELDOUT_ROBOT_INIT_NOISE,
    SELECTED_POLICY_FILE,
    SELECTION_FILE,
    Candidate,
    HeldoutSelector,
    choose,
    heldout_placements,
    selection_iterations,
)
from libero_tgrpo.stages import observation_space, run_train


def test_choose_takes_placed_then_success_and_the_earliest_among_equals():
    start = Candidate("start", 0, 0.5, 0.6)
    assert choose([start, Candidate("iter_0010", 10, 0.6, 0.6)]).label == "iter_0010"
    assert choose([start, Candidate("iter_0010", 10, 0.5, 0.7)]).label == "iter_0010"
    assert choose([start, Candidate("iter_0010", 10, 0.5, 0.6), Candidate("final", 30, 0.4, 1.0)]) is start
    with pytest.raises(ValueError, match="at least one"):
        choose([])


def test_selection_points_are_evenly_spaced_and_end_at_the_final_iteration():
    assert selection_iterations(30, 3) == [10, 20, 30]
    assert selection_iterations(7, 3) == [3, 5, 7]
    assert selection_iterations(2, 3) == [1, 2]
    assert heldout_placements(2) == [HELDOUT_PLACEMENT_OFFSET, HELDOUT_PLACEMENT_OFFSET + 1]
    # held-out placements stay clear of every training placement of the table's runs
    from libero_tgrpo.envs import TRAIN_PLACEMENT_OFFSET

    assert TRAIN_PLACEMENT_OFFSET + 10 + 120 * 8 < HELDOUT_PLACEMENT_OFFSET


@pytest.mark.parametrize(("changes", "named"), [({"select": "best"}, "select='best'"),
                                                ({"select_placements": 0}, "select_placements=0"),
                                                ({"select_points": 1.5}, "select_points=1.5")])
def test_bad_selection_options_are_refused_by_name(changes, named):
    with pytest.raises(ValueError, match=named):
        PipelineConfig(**changes)


def test_the_selection_options_have_flags_on_run_and_train():
    from libero_tgrpo.cli import parse

    for command in ("run", "train"):
        cfg = parse([command, "--select", "heldout", "--select-placements", "12", "--select-points", "2"])[1].options
        assert (cfg.select, cfg.select_placements, cfg.select_points) == ("heldout", 12, 2)
    assert PipelineConfig().select == "final"


def _cfg(tmp_path, **kw):
    base = PipelineConfig(output_dir=str(tmp_path), hidden=(16,), num_envs=2, progress=False, video=False,
                          snapshot_interval=0, select="heldout", select_placements=2,
                          eval=EvalConfig(states=(0,), max_steps=4))
    return base.replace(**{"rl.iterations": 3, "rl.max_steps": 4, **kw})


def _train(cfg, out):
    policy, spec = build_policy("state", observation_space(cfg.task, cfg.obs_mode), seed=0, hidden=(16,))
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    threads = torch.get_num_threads()
    try:
        result = run_train(cfg, policy, spec, out)
    finally:
        torch.set_num_threads(threads)
    return result, start


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True))


@pytest.mark.parametrize("method", ["tgrpo", "ppo"])
def test_a_run_with_heldout_selection_scores_its_candidates_and_keeps_the_best(tmp_path, method):
    # 4-step episodes never succeed: every candidate scores 0, so the earliest (the start) must be kept
    cfg = _cfg(tmp_path, method=method)
    result, start = _train(cfg, tmp_path)
    record = json.loads((tmp_path / SELECTION_FILE).read_text())
    assert [c["label"] for c in record["candidates"]] == ["start", "iter_0001", "iter_0002", "iter_0003"]
    assert record["chosen"]["label"] == "start" and result.selection["chosen"]["label"] == "start"
    assert record["placements"] == 2 and record["placement_seeds"][0] == HELDOUT_PLACEMENT_OFFSET
    assert record["robot_init_noise"] == HELDOUT_ROBOT_INIT_NOISE
    # the run's policy is the chosen one; policy.pt stays the final iterate, selected_policy.pt the chosen
    final, _, _ = load_policy(tmp_path / "policy.pt")
    assert _same(result.policy.state_dict(), start)
    assert not _same(final.state_dict(), start)
    assert _same(load_policy(tmp_path / SELECTED_POLICY_FILE)[0].state_dict(), start)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("eval/heldout_placed") for r in rows] == [0.0, 0.0, 0.0]


def test_ppo_at_an_env_step_budget_scores_its_last_iteration_as_the_final_candidate(tmp_path):
    # 2 envs x 4 steps = 8 env steps per iteration; a budget of 12 ends the run after iteration 2 of 3
    cfg = _cfg(tmp_path, method="ppo", **{"ppo.env_step_budget": 12})
    result, _ = _train(cfg, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[-1]["charts/env_steps"] == 16
    record = json.loads((tmp_path / SELECTION_FILE).read_text())
    assert [c["label"] for c in record["candidates"]] == ["start", "iter_0001", "iter_0002"]


def test_heldout_placements_start_the_arm_like_the_benchmark_states_unless_told_otherwise():
    from libero_gym import BENCHMARK_ROBOT_INIT_NOISE
    from libero_tgrpo.selection import heldout_envs

    assert HELDOUT_ROBOT_INIT_NOISE == BENCHMARK_ROBOT_INIT_NOISE > 0
    for kwargs, expected in (({}, HELDOUT_ROBOT_INIT_NOISE), ({"robot_init_noise": 0.0}, 0.0)):
        envs = heldout_envs(4, 2, env_kwargs=kwargs)
        try:
            assert list(envs.unwrapped.get_attr("robot_init_noise")) == [expected, expected]
        finally:
            envs.close()


def test_a_selector_goes_on_from_the_selection_file_of_a_resumed_run(tmp_path):
    spec_space = observation_space(4, "state")
    policy, spec = build_policy("state", spec_space, seed=0, hidden=(16,))
    sel = HeldoutSelector(4, tmp_path, spec, placements=1, points=2, max_steps=3)
    try:
        assert sel.consider(policy, 0, 0.0) == {"heldout_placed": 0.0, "heldout_success": 0.0}
        assert sel.consider(policy, 1, 0.25) == {}  # no selection point reached
    finally:
        sel.close()
    again = HeldoutSelector(4, tmp_path, spec, placements=1, points=2, max_steps=3)
    assert [c.label for c in again.candidates] == ["start"]
    assert not again.due(0.0) and not again.due(0.49) and again.due(0.5)
    assert _same(again.best_state, policy.state_dict())


def test_heldout_select_scores_a_finished_run_like_the_run_itself(tmp_path):
    """The post-hoc command on a run's snapshots gives the scores the run gave its candidates in training."""
    from benchmarks import heldout_select as hs
    from benchmarks.paper_table import weights_digest

    run_root = tmp_path / "table"
    out = run_root / "runs" / "task4_seed0" / "tgrpo"
    cfg = _cfg(out, snapshot_interval=1, select_placements=1, **{"eval.max_steps": 6})
    result, start = _train(cfg, out)
    policy_info = json.loads((out / "policy.json").read_text())["info"]
    sft_policy = build_policy("state", observation_space(4, "state"), seed=0, hidden=(16,))[0]
    cell = {"task": 4, "method": "tgrpo", "seed": 0, "regime": "weak", "success_rate": 0.1, "placed_rate": 0.1,
            "date": policy_info["saved"], "sft_policy": {"weights_sha256": weights_digest(sft_policy)}}
    assert hs.find_run(cell, [tmp_path / "elsewhere", run_root])[0] == out
    with pytest.raises(FileNotFoundError, match="Task4 tgrpo seed 0"):
        hs.find_run({**cell, "sft_policy": {"weights_sha256": "0" * 64}}, [run_root])
    sft_cell = {**cell, "method": "sft", "success_rate": 0.3, "placed_rate": 0.2}
    unit = hs.run_unit(tmp_path / "hs", cell, sft_cell, [run_root], placements=1, quiet=True, max_steps=6)
    in_training = json.loads((out / SELECTION_FILE).read_text())["candidates"]
    assert [c["label"] for c in unit["candidates"]] == ["start", "iter_0001", "iter_0002", "final"]
    assert [(c["placed_rate"], c["success_rate"]) for c in unit["candidates"]] == [
        (c["placed_rate"], c["success_rate"]) for c in in_training]
    assert unit["chosen"] == "start" and unit["selected"]["placed_rate"] == 0.2  # the SFT cell's

    # scored again with another arm-start noise: the same candidate files, the earlier choice kept beside the new
    from benchmarks.heldout_rescore import candidate_file, rescore

    again = rescore(unit, sft_cell, [], 0.0, tmp_path / "rescore", quiet=True)
    assert [(c["label"], c["file"]) for c in again["candidates"]] == [
        (c["label"], c["file"]) for c in unit["candidates"]]
    assert again["robot_init_noise"] == 0.0 and again["before"]["chosen"] == "start"
    assert again["chosen"] == "start" and again["selected"]["source"] == "the SFT cell"
    with pytest.raises(FileNotFoundError, match="a run without snapshots"):
        candidate_file(out, "iter_0007")


def test_the_summary_replaces_only_the_scored_cells_and_judges_the_goals_both_ways(tmp_path):
    from benchmarks import heldout_select as hs
    from libero_tgrpo.files import write_json

    cells = [{"task": 2, "method": m, "seed": s, "regime": "paper", "success_rate": r, "placed_rate": r}
             for s in range(3) for m, r in (("sft", 0.9), ("tgrpo", 0.7 if s == 0 else 1.0), ("ppo", 0.9))]
    write_json(tmp_path / "table.json", {"cells": cells})
    write_json(tmp_path / "units" / "task2_tgrpo_seed0_paper.json", {
        "key": "task2_tgrpo_seed0_paper", "task": 2, "method": "tgrpo", "seed": 0, "regime": "paper",
        "run_dir": "/somewhere/table/runs/task2_seed0_paper/tgrpo",
        "candidates": [{"label": "start", "placed_rate": 1.0, "file": "/somewhere/table/runs/task2_seed0_paper/"
                        "tgrpo/init_policy.pt"}, {"label": "final", "placed_rate": 0.8}],
        "chosen": "start", "final": {"success_rate": 0.7, "placed_rate": 0.7},
        "selected": {"success_rate": 0.9, "placed_rate": 0.9}})
    out = hs.summarize(tmp_path, tmp_path / "table.json", tmp_path / "res")
    drop = {g["goal"]: g for g in out["goals_final"]}["no RL run more than 5 points below its SFT"]
    drop_sel = {g["goal"]: g for g in out["goals_selected"]}["no RL run more than 5 points below its SFT"]
    assert drop["verdict"] == "missed" and drop["runs_below"] == ["task2_tgrpo_seed0_paper"]
    assert drop_sel["verdict"] == "met"
    assert "task2_ppo_seed0_paper" in out["unscored"] and "task2_tgrpo_seed0_paper" not in out["unscored"]
    assert (tmp_path / "res" / "heldout_selection.png").is_file()
    unit = out["units"]["task2_tgrpo_seed0_paper"]  # file paths from the table's runs/ on, not this machine's
    assert unit["run_dir"] == "runs/task2_seed0_paper/tgrpo"
    assert unit["candidates"][0]["file"] == "runs/task2_seed0_paper/tgrpo/init_policy.pt"
    assert "| task2_tgrpo_seed0_paper | 100, 80 | start | 70 / 70 | 90 / 90 |" in (
        tmp_path / "res" / "heldout_selection.md").read_text()


def test_a_ppo_rerun_takes_the_protocol_its_cell_recorded(tmp_path):
    from benchmarks import heldout_select as hs
    from benchmarks.paper_table import Cell, ppo_overrides
    from libero_tgrpo.files import write_json

    proto = {"lr": 3e-5, "kl_beta": 0.04, "iterations": 120, "env_step_budget": 27168, "value_max_grad_norm": 1.0,
             "normalize_value_targets": True}
    cell = {"task": 10, "method": "ppo", "seed": 0, "regime": "weak", "protocol": proto}
    got = hs.rerun_overrides(cell, placements=30, quiet=True)
    assert got == {"progress": False, "select": "heldout", "select_placements": 30, "select_points": 3,
                   "ppo.env_step_budget": 27168, "ppo.value_max_grad_norm": 1.0,
                   "ppo.normalize_value_targets": True, "rl.iterations": 120}
    # the same PPO options the table gives a PPO cell from its TGRPO cell's env steps (30 TGRPO iterations)
    write_json(Cell(10, "tgrpo", 0).path(tmp_path), {"train": {"env_steps": 27168}})
    table = ppo_overrides(tmp_path, Cell(10, "ppo", 0), 30)
    assert {k: got[k] for k in table} == table
    with pytest.raises(ValueError, match="Task10 ppo seed 0: its protocol records no env_step_budget"):
        hs.rerun_overrides({**cell, "protocol": {**proto, "env_step_budget": None}}, placements=30, quiet=True)
    assert hs.rerun_overrides({**cell, "method": "tgrpo"}, 30, True) == {
        "progress": False, "select": "heldout", "select_placements": 30, "select_points": 3}
