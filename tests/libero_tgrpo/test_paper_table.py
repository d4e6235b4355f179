"""benchmarks/paper_table.py: the plan of cells and the summary built from whatever cells exist."""

import csv
import json
from pathlib import Path

import pytest

from benchmarks import paper_table


def test_plan_runs_sft_first_and_ablations_only_on_their_tasks():
    cells = paper_table.plan([1, 4], [0], list(paper_table.METHOD_ORDER), [4])
    Cell = paper_table.Cell
    assert cells == [Cell(1, "sft", 0), Cell(1, "tgrpo", 0), Cell(4, "sft", 0), Cell(4, "tgrpo", 0),
                     Cell(4, "step_only", 0), Cell(4, "traj_only", 0), Cell(4, "ppo", 0)]


def test_a_cell_owns_its_key_and_paths(tmp_path):
    c = paper_table.Cell(4, "tgrpo", 2)
    assert c.key == "task4_tgrpo_seed2" and c.label == "Task4 tgrpo seed 2"
    assert c.path(tmp_path) == tmp_path / "cells" / "task4_tgrpo_seed2.json"
    assert c.failed_path(tmp_path) == tmp_path / "failed" / "task4_tgrpo_seed2.json"
    assert c.raw_alpha_path(tmp_path) == tmp_path / paper_table.RAW_ALPHA_DIR / "task4_tgrpo_seed2.json"
    assert c.run_dir(tmp_path) == tmp_path / "runs" / "task4_seed2"
    assert c.sft == paper_table.Cell(4, "sft", 2) and c.is_rl and not c.sft.is_rl
    assert paper_table.Cell.of({"task": "4", "method": "tgrpo", "seed": 2, "x": 1}) == c


def _cell(out, task, method, seed, rate):
    path = paper_table.Cell(task, method, seed).path(out)
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
    agg = payload["aggregate"]["weak"]["success"]
    assert agg["sft"]["4"]["mean"] == pytest.approx(30.0) and agg["sft"]["4"]["std"] == pytest.approx(10.0)
    assert agg["tgrpo"]["4"]["n"] == 3
    assert payload["deltas"]["weak"]["success"]["tgrpo-sft"]["mean"] == pytest.approx(70 / 3)
    assert payload["deltas"]["weak"]["success"]["tgrpo-step_only"]["pairs"] == 1
    assert payload["aggregate"]["weak"]["placed"] == {}  # these cells have no placed rate
    md = (res / "paper_table.md").read_text()
    assert "| TGRPO | 53.3 ± 5.8 (3) | 53.3 |" in md  # ours
    assert "| SFT | 74 | 74.0 |" in md  # the paper's, on the same tasks
    assert "| weak | TGRPO - SFT | LIBERO success | +23.3 |" in md
    rows = list(csv.DictReader(open(res / "paper_table.csv")))
    assert {(r["regime"], r["metric"], r["method"], r["task"]) for r in rows} == {
        ("weak", "success", "sft", "4"), ("weak", "success", "tgrpo", "4"), ("weak", "success", "step_only", "4")}
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
    assert payload["aggregate"]["weak"]["success"]["tgrpo"]["1"]["values"] == [40.0]  # the raw-alpha cell is not in the table
    assert payload["raw_alpha_cells"][0]["success_rate"] == 0.0
    assert "| T1 | TGRPO | 0 | 10, 1 | 0 | 28 |" in (res / "paper_table.md").read_text()


def test_train_diagnostics_of_a_history():
    hist = [{"losses/entropy_token": 0.2, "losses/ref_kl": 0.1, "charts/success_rate": 0.5,
             "charts/env_steps": 800.0, "losses/optimizer_steps": 100.0},
            {"losses/entropy_token": 0.5, "losses/ref_kl": 3.0, "charts/success_rate": 0.0,
             "charts/env_steps": 1500.0, "losses/optimizer_steps": 90.0},
            {"losses/entropy_token": 0.3, "losses/ref_kl": 1.0, "charts/success_rate": 0.25,
             "charts/env_steps": 2000.0, "losses/optimizer_steps": 60.0}]
    d = paper_table.train_diagnostics(hist)
    assert d == {"entropy_token_first": 0.2, "entropy_token_max": 0.5, "ref_kl_max": 3.0, "ref_kl_last": 1.0,
                 "group_success_last5": pytest.approx(0.25), "env_steps": 2000.0, "optimizer_steps": 250.0}
    assert paper_table.train_diagnostics([]) == {}


def test_entropy_of_older_logs_is_read_per_token():
    # logs written before entropy was per token hold the entropy of a whole 7-token action
    d = paper_table.train_diagnostics([{"losses/entropy": 14.0}, {"losses/entropy": 21.0}])
    assert d == {"entropy_token_first": 2.0, "entropy_token_max": 3.0}
    cell = {"task": 2, "method": "tgrpo", "seed": 0, "train": {"entropy_first": 7.0, "entropy_max": 14.0,
                                                               "ref_kl_max": 1.0}}
    assert paper_table._cell_diagnostics(Path("/nonexistent"), cell) == {
        "entropy_token_first": 1.0, "entropy_token_max": 2.0, "ref_kl_max": 1.0}


def test_runs_below_their_sft_policy_are_listed_with_their_training_log(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    _cell(out, 2, "sft", 1, 0.84)
    _cell(out, 2, "tgrpo", 1, 0.30)  # below its SFT policy
    _cell(out, 2, "sft", 0, 0.78)
    _cell(out, 2, "tgrpo", 0, 0.82)  # above: not listed
    log = out / "runs" / "task2_seed1" / "tgrpo" / "metrics.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("\n".join(json.dumps({"iteration": i, "losses/entropy_token": e, "losses/ref_kl": k,
                                         "charts/success_rate": 0.125})
                             for i, (e, k) in enumerate([(2.7, 0.1), (3.2, 0.9), (2.8, 0.3)])))
    payload = paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "LIBERO success: 1 of 2 RL runs; placed: 0 of 0 RL runs with a placed rate on both sides (2 without)" in md
    assert "| weak | T2 | TGRPO | 1 | 84 | 30 | - | - | 2.70 → 3.20 | 0.90 / 0.30 | 12% |" in md
    assert "| weak | T2 | TGRPO | 0 |" not in md
    assert payload["train_diagnostics"]["task2_tgrpo_seed0"] == {}  # no log on disk for it


def test_changed_settings_need_their_own_out_dir(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="lr differ from the table's settings"):
        paper_table.main(["run", "--lr", "3e-5", "--tasks", "2", "--seeds", "1", "--methods", "tgrpo"])
    assert not (tmp_path / paper_table.DEFAULT_OUT).exists()


def test_restore_rebuilds_the_same_table_from_the_published_summary(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    _cell(out, 2, "sft", 1, 0.84)
    _cell(out, 2, "tgrpo", 1, 0.30)
    log = out / "runs" / "task2_seed1" / "tgrpo" / "metrics.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text(json.dumps({"losses/entropy": 2.0, "losses/ref_kl": 0.5, "charts/success_rate": 0.1}) + "\n")
    raw = out / paper_table.RAW_ALPHA_DIR / "task1_tgrpo_seed0.json"
    raw.parent.mkdir(parents=True)
    raw.write_text(json.dumps({"task": 1, "method": "tgrpo", "seed": 0, "success_rate": 0.0, "alphas": [10.0, 1.0]}))
    first = paper_table.summarize(out, res)

    fresh = tmp_path / "fresh"
    _cell(fresh, 2, "sft", 1, 0.50)  # a cell already there is kept, not overwritten
    assert paper_table.restore(res / "paper_table.json", fresh) == 2  # tgrpo cell + raw-alpha cell
    kept = json.loads(paper_table.Cell(2, "sft", 1).path(fresh).read_text())
    assert kept["success_rate"] == 0.50 and "restored_from" not in kept
    paper_table.Cell(2, "sft", 1).path(fresh).unlink()
    assert paper_table.restore(res / "paper_table.json", fresh) == 1
    again = paper_table.summarize(fresh, tmp_path / "results2")
    assert again["aggregate"] == first["aggregate"] and again["deltas"] == first["deltas"]
    assert again["train_diagnostics"] == first["train_diagnostics"]  # from the restored cell, no log needed
    assert again["raw_alpha_cells"] == first["raw_alpha_cells"]


def test_restore_refuses_a_file_that_is_not_a_summary(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{\"rows\": []}")
    with pytest.raises(SystemExit, match="not a paper-table summary"):
        paper_table.restore(bad, tmp_path / "out")
    with pytest.raises(SystemExit, match="cannot read"):
        paper_table.restore(tmp_path / "missing.json", tmp_path / "out")


def test_weights_digest_follows_the_weights_not_the_object():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    a = torch.nn.Linear(3, 2)
    b = torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert paper_table.weights_digest(a) == paper_table.weights_digest(b)
    with torch.no_grad():
        b.bias[0] += 1e-6
    assert paper_table.weights_digest(a) != paper_table.weights_digest(b)


def test_rl_cells_that_started_from_other_sft_weights_are_named(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    for method, digest in (("sft", "aaa"), ("tgrpo", "aaa"), ("ppo", "bbb")):
        _cell(out, 4, method, 0, 0.5)
        path = paper_table.Cell(4, method, 0).path(out)
        path.write_text(json.dumps(dict(json.loads(path.read_text()), sft_policy={"weights_sha256": digest})))
    paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "the SFT policy was retrained): T4 PPO seed 0." in md


def test_summary_says_which_rl_settings_differ_from_the_defaults(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    _cell(out, 2, "sft", 1, 0.8)
    _cell(out, 2, "tgrpo", 1, 0.7)
    path = paper_table.Cell(2, "tgrpo", 1).path(out)
    path.write_text(json.dumps(dict(json.loads(path.read_text()), config={"lr": 1e-4, "kl_beta": 0.04})))
    paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "differ from the main job's (and the table's): lr 0.0001 (1 RL cell; default 3e-05)." in md
    assert "kl beta" not in md  # the default value is not reported as a change


def test_changed_settings_are_read_from_the_config_parts_of_new_cells(tmp_path):
    from libero_tgrpo.config import PipelineConfig

    out, res = tmp_path / "cells", tmp_path / "results"
    _cell(out, 2, "sft", 1, 0.8)
    _cell(out, 2, "tgrpo", 1, 0.7)
    path = paper_table.Cell(2, "tgrpo", 1).path(out)
    config = PipelineConfig(task=2, seed=1).replace(**{"rl.kl_beta": 0.01}).to_dict()
    path.write_text(json.dumps(dict(json.loads(path.read_text()), config=config)))
    _cell(out, 2, "ppo", 1, 0.6)  # PPO's iterations are its cap, not a changed setting
    ppo = PipelineConfig(task=2, seed=1).replace(**{"rl.iterations": 4 * PipelineConfig().rl.iterations}).to_dict()
    _rewrite(out, 2, "ppo", 1, config=ppo)
    paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "kl beta 0.01 (1 RL cell; default 0.04)." in md and "lr 3e-05" not in md and "iterations 120" not in md
    _rewrite(out, 2, "ppo", 1, config=PipelineConfig(task=2, seed=1).replace(**{"rl.iterations": 4 * 60}).to_dict())
    paper_table.summarize(out, res)  # a cap from other iterations than the main job's is a changed setting
    assert "iterations 240 (1 RL cell; default 30)" in (res / "paper_table.md").read_text()


def test_run_overrides_address_the_config_parts():
    args = paper_table.build_parser().parse_args(["run", "--lr", "3e-5", "--states", "0-2", "--quiet"])
    over = paper_table._overrides(args)
    assert over == {"progress": False, "rl.lr": 3e-5, "eval.states": (0, 1, 2)}
    from libero_tgrpo.config import PipelineConfig

    cfg = PipelineConfig().replace(**over)
    assert cfg.rl.lr == 3e-5 and cfg.eval.states == (0, 1, 2) and not cfg.progress


def _rewrite(out, task, method, seed, **fields):
    path = paper_table.Cell(task, method, seed).path(out)
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **fields)))


def test_summary_reports_env_and_optimizer_steps_per_method_and_names_former_protocol_cells(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    for method in ("sft", "tgrpo", "step_only", "traj_only", "ppo"):
        _cell(out, 4, method, 0, 0.5)
    _rewrite(out, 4, "tgrpo", 0, alphas=[0.35, 0.65], train={"env_steps": 4000.0, "optimizer_steps": 3000.0,
                                                             "ref_kl_max": 1.0})
    _rewrite(out, 4, "step_only", 0, alphas=[1.0, 0.0], train={"env_steps": 5000.0, "ref_kl_max": 1.0})
    _rewrite(out, 4, "traj_only", 0, alphas=[0.0, 0.65])  # zeroed after normalising: the former rule
    _rewrite(out, 4, "ppo", 0, train={"env_steps": 9000.0, "optimizer_steps": 200.0, "ref_kl_max": 0.0})
    paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "| weak | TGRPO | 1 | 4000 (1) | 3000 (1) |" in md
    assert "| weak | step-only | 1 | 5000 (1) | - |" in md
    assert "| weak | PPO | 1 | 9000 (1) | 200 (1) |" in md
    assert "former protocol" in md and "T4 trajectory-only seed 0, T4 PPO seed 0." in md
    _rewrite(out, 4, "ppo", 0, protocol={"env_step_budget": 4000})
    _rewrite(out, 4, "traj_only", 0, alphas=[0.0, 1.0])
    paper_table.summarize(out, res)
    assert "former protocol" not in (res / "paper_table.md").read_text()


def test_summary_names_tgrpos_alphas_on_the_tasks_with_ablation_cells(tmp_path):
    out, res = tmp_path / "cells", tmp_path / "results"
    for task, alphas in ((2, [10 / 11, 1 / 11]), (4, [0.35, 0.65])):
        _cell(out, task, "sft", 0, 0.5)
        _cell(out, task, "tgrpo", 0, 0.6)
        _rewrite(out, task, "tgrpo", 0, alphas=alphas)
    paper_table.summarize(out, res)
    assert "TGRPO's (α1, α2)" not in (res / "paper_table.md").read_text()  # no ablation cell yet
    _cell(out, 2, "traj_only", 0, 0.9)
    paper_table.summarize(out, res)
    md = (res / "paper_table.md").read_text()
    assert "trajectory-level weight): weak T2 (0.91, 0.09)." in md  # T4 has no ablation cell: not named


def test_ppo_cells_run_at_the_env_steps_of_their_tgrpo_cell(tmp_path):
    from libero_tgrpo.config import PipelineConfig

    cell = paper_table.Cell(4, "ppo", 1)
    with pytest.raises(RuntimeError, match="env-step budget of Task4 tgrpo seed 1"):
        paper_table.ppo_overrides(tmp_path, cell, 30)
    _cell(tmp_path, 4, "tgrpo", 1, 0.6)
    _rewrite(tmp_path, 4, "tgrpo", 1, train={"env_steps": 4321.0})
    over = paper_table.ppo_overrides(tmp_path, cell, 30)
    cfg = PipelineConfig(task=4, seed=1, method="ppo").replace(**over)
    ppo = cfg.rl_config(tmp_path)
    assert ppo.env_step_budget == 4321 and ppo.iterations == 30 * paper_table.PPO_ITERATION_CAP_FACTOR
    assert ppo.value_max_grad_norm == paper_table.PPO_VALUE_MAX_GRAD_NORM and ppo.normalize_value_targets
    assert paper_table.protocol(cfg)["env_step_budget"] == 4321
    assert paper_table.protocol(PipelineConfig(task=4, method="step_only"))["alphas"] == "zeroed before normalising"


def test_run_cell_gives_ppo_the_budget_of_its_tgrpo_cell(tmp_path, monkeypatch):
    # the stages are replaced by recorders: this checks what run_cell hands to training, not training itself
    import libero_tgrpo.policies
    import libero_tgrpo.stages
    from tgrpo.trainer import TrainResult

    seen = {}

    def run_train(cfg, policy, spec, out_dir):
        seen["cfg"] = cfg
        return TrainResult(policy=policy, history=[{"charts/env_steps": 4321.0, "losses/optimizer_steps": 7.0}])

    torch = pytest.importorskip("torch")
    policy = torch.nn.Linear(2, 2)
    sft_file = paper_table.Cell(4, "sft", 1).run_dir(tmp_path) / "sft" / "policy.pt"
    sft_file.parent.mkdir(parents=True)
    sft_file.write_text("x")
    monkeypatch.setattr(libero_tgrpo.policies, "load_policy", lambda path: (policy, {}, {}))
    monkeypatch.setattr(libero_tgrpo.stages, "run_train", run_train)
    monkeypatch.setattr(libero_tgrpo.stages, "run_eval", lambda *a, **k: {
        "summary": {"success_rate": 0.5, "placed_rate": 0.5}, "episodes": []})
    _cell(tmp_path, 4, "tgrpo", 1, 0.6)
    _rewrite(tmp_path, 4, "tgrpo", 1, train={"env_steps": 4321.0})
    payload = paper_table.run_cell(tmp_path, paper_table.Cell(4, "ppo", 1), {"progress": False})
    ppo = seen["cfg"].rl_config(tmp_path)
    assert ppo.env_step_budget == 4321 and ppo.normalize_value_targets and ppo.value_max_grad_norm is not None
    assert payload["protocol"]["env_step_budget"] == 4321
    assert payload["train"]["env_steps"] == 4321.0 and payload["train"]["optimizer_steps"] == 7.0


# ---------------------------------------------------------------------------------------------- regimes
def test_paper_regime_cells_keep_apart_and_weak_cells_keep_their_keys(tmp_path):
    weak, paper = paper_table.Cell(4, "tgrpo", 2), paper_table.Cell(4, "tgrpo", 2, "paper")
    assert weak.key == "task4_tgrpo_seed2" and weak.run_dir(tmp_path) == tmp_path / "runs" / "task4_seed2"
    assert paper.key == "task4_tgrpo_seed2_paper"
    assert paper.path(tmp_path) == tmp_path / "cells" / "task4_tgrpo_seed2_paper.json"
    assert paper.run_dir(tmp_path) == tmp_path / "runs" / "task4_seed2_paper"
    assert paper.failed_path(tmp_path) == tmp_path / "failed" / "task4_tgrpo_seed2_paper.json"
    assert paper.sft == paper_table.Cell(4, "sft", 2, "paper") and paper.tgrpo == paper
    assert paper_table.Cell.of({"task": 4, "method": "tgrpo", "seed": 2}) == weak  # cells before regimes: weak
    assert paper_table.Cell.of({"task": 4, "method": "tgrpo", "seed": 2, "regime": "paper"}) == paper
    assert "paper-level SFT" in paper.label and weak.label == "Task4 tgrpo seed 2"
    with pytest.raises(ValueError, match="regime 'strong'"):
        paper_table.Cell(4, "sft", 0, "strong")


def test_default_plan_is_weak_everywhere_and_paper_level_on_tasks_2_4_10():
    args = paper_table.build_parser().parse_args(["list"])
    cells = paper_table._plan_from(args)
    weak = [c for c in cells if c.regime == "weak"]
    paper = [c for c in cells if c.regime == "paper"]
    assert len(weak) == 10 * 2 * 3 + 3 * 3 * 3 and len(paper) == 3 * 5 * 3
    assert {c.task for c in paper} == {2, 4, 10} and {c.method for c in paper} == set(paper_table.METHOD_ORDER)
    assert {c.task for c in weak if c.method == "ppo"} == {2, 4, 10} and {c.seed for c in cells} == {0, 1, 2}
    for i, c in enumerate(cells):  # every RL cell after the SFT cell of its (task, seed, regime); PPO after TGRPO
        if c.is_rl:
            assert c.sft in cells[:i]
        if c.method == "ppo":
            assert c.tgrpo in cells[:i]
    only_paper = paper_table._plan_from(paper_table.build_parser().parse_args(["list", "--regime", "paper",
                                                                               "--tasks", "1-4"]))
    assert {(c.task, c.regime) for c in only_paper} == {(2, "paper"), (4, "paper")}
    with pytest.raises(SystemExit, match="--regime 'strong'"):
        paper_table._plan_from(paper_table.build_parser().parse_args(["list", "--regime", "strong"]))


def test_paper_regime_cells_get_its_sft_and_the_budget_of_their_own_tgrpo_cell(tmp_path):
    from libero_tgrpo.config import PipelineConfig

    paper_sft = paper_table.PAPER_SFT
    over = paper_table.cell_overrides(tmp_path, paper_table.Cell(2, "sft", 0, "paper"), {"progress": False})
    cfg = PipelineConfig(task=2).replace(**over)
    assert (cfg.demos.num_demos, cfg.sft.epochs, cfg.hidden) == (paper_sft.num_demos, paper_sft.epochs,
                                                                 paper_sft.hidden)
    assert paper_table.cell_overrides(tmp_path, paper_table.Cell(2, "sft", 0), {"progress": False}) == {
        "progress": False}  # the weak regime is the main job's SFT
    assert paper_table.cell_overrides(tmp_path, paper_table.Cell(2, "sft", 0, "paper"),
                                      {"demos.num_demos": 3})["demos.num_demos"] == 3  # explicit overrides win
    _cell(tmp_path, 2, "tgrpo", 0, 0.5)
    _rewrite(tmp_path, 2, "tgrpo", 0, train={"env_steps": 1000.0})
    ppo = paper_table.Cell(2, "ppo", 0, "paper")
    with pytest.raises(RuntimeError, match="paper-level SFT"):  # the weak TGRPO cell is not its budget
        paper_table.cell_overrides(tmp_path, ppo, {})
    path = paper_table.Cell(2, "tgrpo", 0, "paper").path(tmp_path)
    path.write_text(json.dumps({"task": 2, "method": "tgrpo", "seed": 0, "regime": "paper", "success_rate": 0.9,
                                "train": {"env_steps": 2500.0}}))
    assert paper_table.cell_overrides(tmp_path, ppo, {})["ppo.env_step_budget"] == 2500


def test_run_cell_of_the_paper_regime_trains_and_records_its_sft(tmp_path, monkeypatch):
    # the stages are replaced by recorders: this checks what run_cell hands to demos and SFT, not SFT itself
    import libero_tgrpo.stages

    torch = pytest.importorskip("torch")
    seen = {}

    def run_sft(cfg, demos, out_dir):
        seen["cfg"], seen["out_dir"] = cfg, out_dir
        return torch.nn.Linear(2, 2), {}, {}

    monkeypatch.setattr(libero_tgrpo.stages, "run_demos", lambda cfg: (None, None))
    monkeypatch.setattr(libero_tgrpo.stages, "run_sft", run_sft)
    monkeypatch.setattr(libero_tgrpo.stages, "run_eval", lambda *a, **k: {
        "summary": {"success_rate": 0.9, "placed_rate": 0.8}, "episodes": [
            {"success": True, "placed": True, "length": 100}, {"success": True, "placed": False, "length": 90}]})
    cell = paper_table.Cell(4, "sft", 1, "paper")
    payload = paper_table.run_cell(tmp_path, cell, {"progress": False})
    assert seen["cfg"].demos.num_demos == paper_table.PAPER_SFT.num_demos
    assert seen["out_dir"] == tmp_path / "runs" / "task4_seed1_paper" / "sft"
    assert payload["regime"] == "paper" and payload["placed_per_state"] == [1, 0]
    assert paper_table.SFTSetting.of(payload["sft_setting"]) == paper_table.PAPER_SFT


def _full(out, task, method, seed, success, placed, regime="weak"):
    cell = paper_table.Cell(task, method, seed, regime)
    cell.path(out).parent.mkdir(parents=True, exist_ok=True)
    cell.path(out).write_text(json.dumps({
        "task": task, "method": method, "seed": seed, "regime": regime, "success_rate": success,
        "placed_rate": placed, "summary": {"success_rate": success, "placed_rate": placed},
        "sft_setting": {"num_demos": paper_table.regime_sft(regime).num_demos,
                        "epochs": paper_table.regime_sft(regime).epochs,
                        "hidden": list(paper_table.regime_sft(regime).hidden)},
        "versions": {"mujoco": "3"}}))


def _goal_cells(out, weak_gain=0.12, paper_gain=0.03):
    """T4 in both regimes, 3 seeds, SFT placed 0.50/0.40/0.60; TGRPO = SFT + gain; step-only below, trajectory-only
    above TGRPO, PPO on 2 seeds only (not enough for its goal)."""
    for seed, base in enumerate([0.50, 0.40, 0.60]):
        for regime, gain in (("weak", weak_gain), ("paper", paper_gain)):
            _full(out, 4, "sft", seed, base + 0.1, base, regime)
            _full(out, 4, "tgrpo", seed, base + gain + 0.1, base + gain, regime)
            _full(out, 4, "step_only", seed, base, base - 0.02, regime)
            _full(out, 4, "traj_only", seed, base + 0.2, base + 0.2, regime)
            if seed < 2:
                _full(out, 4, "ppo", seed, base, base, regime)


def test_summary_reports_both_metrics_per_regime_and_counts_cells_without_placed_apart(tmp_path, monkeypatch):
    monkeypatch.setattr(paper_table, "PAPER_SFT_PROVISIONAL", True)  # the wording while the study has not chosen
    out, res = tmp_path / "cells", tmp_path / "results"
    _goal_cells(out)
    _cell(out, 2, "sft", 0, 0.7)  # run before the placed metric: LIBERO success only
    _cell(out, 2, "tgrpo", 0, 0.9)
    payload = paper_table.summarize(out, res)
    weak, paper = payload["aggregate"]["weak"], payload["aggregate"]["paper"]
    assert weak["placed"]["tgrpo"]["4"]["mean"] == pytest.approx(62.0)
    assert weak["success"]["tgrpo"]["2"]["values"] == [90.0] and "2" not in weak["placed"]["tgrpo"]
    assert paper["placed"]["tgrpo"]["4"]["mean"] == pytest.approx(53.0) and "2" not in paper["success"]["sft"]
    assert payload["deltas"]["paper"]["placed"]["tgrpo-sft"]["mean"] == pytest.approx(3.0)
    md = (res / "paper_table.md").read_text()
    weak_md = md.split("## Ours, weak regime")[1].split("## Ours, paper-level regime")[0]
    placed_md = weak_md.split("### Placed (%)")[1]
    assert "| TGRPO | - | 62.0 ± 10.0 (3) | 62.0 (1 task) |" in placed_md  # T2's cells have no placed: '-'
    assert "| TGRPO | 90 (1) | 72.0 ± 10.0 (3) | 81.0 |" in weak_md.split("### Placed (%)")[0]
    assert "2 of the regime's 16 cells have no placed rate" in weak_md
    paper_md = md.split("## Ours, paper-level regime")[1].split("## Paper (Table 1)")[0]
    assert "| TGRPO | 53.0 ± 10.0 (3) | 53.0 |" in paper_md and "no placed rate" not in paper_md
    assert "provisional" in paper_md and "PAPER_SFT" in paper_md  # while the study has not chosen it
    assert "| paper | TGRPO - SFT | placed | +3.0 | 0.0 | 3 | 1 | +3.0 | T4 +3.0 |" in md
    rows = list(csv.DictReader(open(res / "paper_table.csv")))
    placed = next(r for r in rows if (r["regime"], r["metric"], r["method"]) == ("paper", "placed", "tgrpo"))
    assert placed["mean"] == "53.0" and placed["values"] == "53 43 63" and placed["paper"] == ""
    assert {r["regime"] for r in rows} == {"weak", "paper"}
    restored = tmp_path / "restored"
    assert paper_table.restore(res / "paper_table.json", restored) == 30
    assert paper_table.Cell(4, "ppo", 1, "paper").path(restored).is_file()
    again = paper_table.summarize(restored, tmp_path / "results2")
    assert again["aggregate"] == payload["aggregate"] and again["goals"] == payload["goals"]
    pytest.importorskip("matplotlib")
    assert (res / "paper_table.png").stat().st_size > 0


def _goal(payload, regime, goal):
    return next(g for g in payload["goals"] if g["regime"] == regime and g["goal"].startswith(goal))


def test_goals_are_computed_from_the_cells_present(tmp_path, monkeypatch):
    out, res = tmp_path / "cells", tmp_path / "results"
    _goal_cells(out, weak_gain=0.12, paper_gain=0.03)
    monkeypatch.setattr(paper_table, "PAPER_SFT_PROVISIONAL", False)
    chosen = (res / "chosen")
    paper_table.summarize(out, chosen)
    assert "provisional" not in (chosen / "paper_table.md").read_text()
    monkeypatch.setattr(paper_table, "PAPER_SFT_PROVISIONAL", True)
    payload = paper_table.summarize(out, res)
    g = _goal(payload, "weak", "TGRPO >= SFT + 10")
    assert (g["verdict"], g["value"], g["tasks"]) == ("met", pytest.approx(12.0), [4])
    assert _goal(payload, "paper", "TGRPO >= SFT + 4.6")["verdict"] == "missed"
    assert _goal(payload, "weak", "TGRPO above step-only")["verdict"] == "met"
    assert _goal(payload, "weak", "TGRPO above trajectory-only")["value"] == pytest.approx(-8.0)
    assert _goal(payload, "weak", "TGRPO above trajectory-only")["verdict"] == "missed"
    ppo = _goal(payload, "weak", "TGRPO above PPO")
    assert ppo["verdict"] == "not enough cells" and ppo["tasks_short_of_seeds"] == [4]  # 2 seeds of 3
    drop = _goal(payload, "weak", "no RL run more than 5")
    assert drop["verdict"] == "met" and drop["runs"] == 11 and drop["value"] == pytest.approx(-2.0)
    md = (res / "paper_table.md").read_text()
    assert "| weak | TGRPO >= SFT + 10 | +12.0 | met | 3 pairs on T4 |" in md
    assert "| paper | TGRPO >= SFT + 4.6 | +3.0 | **missed** | 3 pairs on T4 (PAPER_SFT provisional) |" in md
    assert "| weak | TGRPO above PPO | - | not enough cells | no task with enough paired seeds; fewer than 3 " \
           "seeds: T4 |" in md

    # the same goals follow the cells: a larger paper-level gain meets it, one run 6 points down misses the drop goal
    _goal_cells(out, weak_gain=0.08, paper_gain=0.05)
    _full(out, 4, "step_only", 1, 0.50, 0.34, "paper")  # LIBERO success as its SFT's, placed 6 points down
    payload = paper_table.summarize(out, res)
    assert _goal(payload, "weak", "TGRPO >= SFT + 10")["verdict"] == "missed"
    assert _goal(payload, "paper", "TGRPO >= SFT + 4.6")["verdict"] == "met"
    drop = _goal(payload, "paper", "no RL run more than 5")
    assert drop["verdict"] == "missed" and drop["runs_below"] == ["task4_step_only_seed1_paper"]
    assert _goal(payload, "weak", "no RL run more than 5")["verdict"] == "met"
    md = (res / "paper_table.md").read_text()
    # the run is below its SFT on placed only (LIBERO success equal): listed among the runs below SFT
    assert "| paper | T4 | step-only | 1 | 50 | 50 | 40 | 34 |" in md


def test_goals_without_placed_cells_say_not_enough_cells(tmp_path):
    out = tmp_path / "cells"
    for seed in range(3):
        _cell(out, 4, "sft", seed, 0.3)
        _cell(out, 4, "tgrpo", seed, 0.6)
    goals = paper_table.goals(paper_table.load_cells(out))
    assert {g["regime"] for g in goals} == {"weak", "paper"} and len(goals) == 10  # 5 goals per regime
    assert all(g["verdict"] == "not enough cells" for g in goals)
