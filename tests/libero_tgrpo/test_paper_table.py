"""benchmarks/paper_table.py: the plan of cells and the summary built from whatever cells exist."""

import csv
import json

import pytest

paper_table = pytest.importorskip("benchmarks.paper_table")


def test_plan_runs_sft_first_and_ablations_only_on_their_tasks():
    cells = paper_table.plan([1, 4], [0], list(paper_table.METHOD_ORDER), [4])
    assert cells == [(1, "sft", 0), (1, "tgrpo", 0), (4, "sft", 0), (4, "tgrpo", 0), (4, "step_only", 0),
                     (4, "traj_only", 0), (4, "ppo", 0)]


def _cell(out, task, method, seed, rate):
    path = paper_table.cell_path(out, task, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": task, "method": method, "seed": seed, "success_rate": rate,
                                "summary": {"success_rate": rate}, "versions": {"mujoco": "3"}}))


def test_summary_from_partial_cells(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    for seed, (s, t) in enumerate([(0.30, 0.50), (0.40, 0.60), (0.20, 0.50)]):
        _cell(out, 4, "sft", seed, s)
        _cell(out, 4, "tgrpo", seed, t)
    _cell(out, 4, "step_only", 0, 0.1)
    payload = paper_table.summarize(out, res)
    agg = payload["aggregate"]
    assert agg["sft"]["4"]["mean"] == pytest.approx(30.0) and agg["sft"]["4"]["std"] == pytest.approx(10.0)
    assert agg["tgrpo"]["4"]["n"] == 3
    assert payload["deltas"]["tgrpo-sft"]["mean"] == pytest.approx(70 / 3)
    assert payload["deltas"]["tgrpo-step_only"]["pairs"] == 1
    md = (res / "paper_table.md").read_text()
    assert "| TGRPO | 53.3 ± 5.8 (3) | 53.3 |" in md  # ours
    assert "| SFT | 74 | 74.0 |" in md  # the paper's, on the same tasks
    assert "| TGRPO - SFT | +23.3 |" in md
    rows = list(csv.DictReader(open(res / "paper_table.csv")))
    assert {(r["method"], r["task"]) for r in rows} == {("sft", "4"), ("tgrpo", "4"), ("step_only", "4")}
    assert next(r for r in rows if r["method"] == "sft")["paper"] == "74"
    pytest.importorskip("matplotlib")
    assert (res / "paper_table.png").stat().st_size > 0


def test_summary_without_cells(tmp_path):
    assert paper_table.summarize(tmp_path / "none", tmp_path / "results") is None


def test_raw_alpha_cells_are_reported_apart(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    _cell(out, 1, "sft", 0, 0.28)
    _cell(out, 1, "tgrpo", 0, 0.40)
    raw = out / paper_table.RAW_ALPHA_DIR / "task1_tgrpo_seed0.json"
    raw.parent.mkdir(parents=True)
    raw.write_text(json.dumps({"task": 1, "method": "tgrpo", "seed": 0, "success_rate": 0.0, "alphas": [10.0, 1.0]}))
    payload = paper_table.summarize(out, res)
    assert payload["aggregate"]["tgrpo"]["1"]["values"] == [40.0]  # the raw-alpha cell is not in the table
    assert payload["raw_alpha_cells"][0]["success_rate"] == 0.0
    assert "| T1 | TGRPO | 0 | 10, 1 | 0 | 28 |" in (res / "paper_table.md").read_text()
