"""benchmarks/ray_cells.py: paper-table cells as Ray tasks on a local cluster give a local run's results."""

import json
from functools import partial

import pytest

from benchmarks import paper_table

ray = pytest.importorskip("ray", reason="running cells on Ray needs the 'ray' extra")
from benchmarks.ray_cells import job_runtime_env, run_cells_on_ray  # noqa: E402

RAY_RUNTIME_ENV = job_runtime_env  # the local_ray fixture (tests/conftest.py) starts Ray with it


def _tiny(demo_cache):
    return {"progress": False, "demos.num_demos": 3, "demos.demo_cache": str(demo_cache), "demos.workers": 1,
            "sft.epochs": 2, "num_envs": 2, "rl.iterations": 1, "rl.max_steps": 6, "eval.states": (0, 1),
            "eval.envs": 2, "eval.max_steps": 12}


def _comparable(cell):
    keep = ("task", "method", "seed", "success_rate", "placed_rate", "summary", "successes_per_state",
            "placed_per_state", "lengths_per_state", "alphas", "config", "train")
    out = {k: cell.get(k) for k in keep}
    out["sft_digest"] = cell["sft_policy"]["weights_sha256"]
    return out


def _files(run_dir):
    """The run's files; a TensorBoard event file counts by its directory (its name holds a time, host and pid)."""
    names = (p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file())
    return sorted(n.rsplit("/", 1)[0] + "/<events>" if "tfevents" in n else n for n in names)


def test_cells_on_ray_match_a_local_run(local_ray, demo_cache, tmp_path):
    overrides = _tiny(demo_cache)
    cells = paper_table.plan([4], [0], ["sft", "tgrpo"], [])
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    for cell in cells:
        paper_table._record(local, cell, paper_table.run_cell(local, cell, overrides), None)
    started = run_cells_on_ray(on_ray, cells, overrides, address="local",
                               record=partial(paper_table._record, on_ray), say=lambda s: None)
    assert started == 2
    for cell in cells:
        a = json.loads(cell.path(local).read_text())
        b = json.loads(cell.path(on_ray).read_text())
        assert b["config"]["output_dir"] == str(cell.run_dir(on_ray))  # written as a local run writes it
        a["config"]["output_dir"] = b["config"]["output_dir"]
        assert _comparable(b) == _comparable(a)
    rl = json.loads(paper_table.Cell(4, "tgrpo", 0).path(on_ray).read_text())
    assert rl["sft_policy"]["trained_in_this_cell"] is False  # started from the SFT cell's policy
    run = paper_table.Cell(4, "sft", 0).run_dir
    assert _files(run(on_ray)) == _files(run(local))
    assert "sft/policy.pt" in _files(run(on_ray)) and "tgrpo/metrics.jsonl" in _files(run(on_ray))

    # resumable as a local run: finished cells are skipped
    assert run_cells_on_ray(on_ray, cells, overrides, address="local",
                            record=partial(paper_table._record, on_ray), say=lambda s: None) == 0


def test_a_failing_cell_is_recorded_and_the_plan_goes_on(local_ray, demo_cache, tmp_path):
    overrides = dict(_tiny(demo_cache), **{"eval.states": (0,)})
    # an unreadable SFT policy on disk: the RL cell fails in its task, the error is recorded
    rl = paper_table.Cell(4, "tgrpo", 0)
    (rl.run_dir(tmp_path) / "sft").mkdir(parents=True)
    (rl.run_dir(tmp_path) / "sft" / "policy.pt").write_bytes(b"not a policy")
    started = run_cells_on_ray(tmp_path, [rl], overrides, address="local",
                               record=partial(paper_table._record, tmp_path), say=lambda s: None)
    assert started == 1 and not rl.path(tmp_path).exists()
    failed = json.loads(rl.failed_path(tmp_path).read_text())
    assert failed["method"] == "tgrpo" and "policy" in failed["error"].lower()


def test_bad_cpus_per_cell_is_refused_before_ray_starts(tmp_path):
    with pytest.raises(ValueError, match="cpus_per_cell=0"):
        run_cells_on_ray(tmp_path, [], {}, address="local", record=lambda *a: None, cpus_per_cell=0)


def test_ppo_on_ray_waits_for_its_tgrpo_cell_and_runs_at_its_env_steps(local_ray, demo_cache, tmp_path):
    cells = paper_table.plan([4], [0], ["sft", "tgrpo", "ppo"], [4])
    started = run_cells_on_ray(tmp_path, cells, dict(_tiny(demo_cache), **{"eval.states": (0,)}), address="local",
                               record=partial(paper_table._record, tmp_path), say=lambda s: None)
    assert started == 3 and not list((tmp_path / "failed").glob("*.json"))
    tgrpo = json.loads(paper_table.Cell(4, "tgrpo", 0).path(tmp_path).read_text())
    ppo = json.loads(paper_table.Cell(4, "ppo", 0).path(tmp_path).read_text())
    assert ppo["protocol"]["env_step_budget"] == int(tgrpo["train"]["env_steps"]) > 0
    assert ppo["config"]["ppo"]["env_step_budget"] == ppo["protocol"]["env_step_budget"]
    assert ppo["train"]["env_steps"] >= ppo["protocol"]["env_step_budget"]


def test_paper_regime_rl_cells_on_ray_wait_for_their_regimes_sft_cell(local_ray, demo_cache, tmp_path):
    cells = paper_table.plan([4], [0], ["sft", "tgrpo"], [], regimes=("paper",))
    assert [c.key for c in cells] == ["task4_sft_seed0_paper", "task4_tgrpo_seed0_paper"]
    started = run_cells_on_ray(tmp_path, cells, dict(_tiny(demo_cache), **{"eval.states": (0,)}), address="local",
                               record=partial(paper_table._record, tmp_path), say=lambda s: None)
    assert started == 2 and not list((tmp_path / "failed").glob("*.json"))
    sft, rl = (json.loads(c.path(tmp_path).read_text()) for c in cells)
    assert sft["regime"] == rl["regime"] == "paper"
    assert rl["sft_policy"]["trained_in_this_cell"] is False  # submitted after its SFT cell, with its policy
    assert rl["sft_policy"]["weights_sha256"] == sft["sft_policy"]["weights_sha256"]
    assert rl["sft_setting"]["hidden"] == list(paper_table.PAPER_SFT.hidden)  # the regime's SFT, tiny otherwise
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["task4_seed0_paper"]  # apart from weak runs
