"""benchmarks/self_release.py: sampled rollouts in the training env, LIBERO success against letting go."""

import json

import pytest

from benchmarks import self_release


@pytest.mark.parametrize("kwargs, named", [({"placements": 0}, "placements=0"), ({"temperature": 0.0}, "temperature=0.0"),
                                           ({"max_steps": 0}, "max_steps=0")])
def test_settings_that_measure_nothing_are_refused_before_any_env(kwargs, named):
    with pytest.raises(ValueError, match=named):
        self_release.measure(None, 4, **kwargs)  # no policy, no env: refused first


def test_an_episode_that_never_lets_go_counts_as_not_released_and_rows_merge(tmp_path):
    from libero_tgrpo.envs import make_train_envs
    from libero_tgrpo.policies import build_policy

    envs = make_train_envs(4, 1, shared_placement=False, max_episode_steps=3)
    space = envs.single_observation_space
    envs.close()
    policy, _ = build_policy("state", space, seed=0)
    res = self_release.measure(policy, 4, placements=2, max_steps=3)
    assert [e["placement_seed"] for e in res["episodes"]] == [8_000_000, 8_000_001]  # training placements
    assert [e["length"] for e in res["episodes"]] == [3, 3]  # truncated at max_steps, not ended early
    assert res["released_rate"] == 0.0 and res["libero_success_rate"] == 0.0 and res["mean_length"] == 3.0
    row = {"policy": "a.pt", **res}
    self_release.record([row], tmp_path)
    self_release.record([dict(row, released_rate=0.5), dict(row, policy="b.pt")], tmp_path)  # a rerun replaces
    rows = json.loads((tmp_path / "self_release.json").read_text())
    assert sorted((r["policy"], r["released_rate"]) for r in rows) == [("a.pt", 0.5), ("b.pt", 0.0)]
    md = (tmp_path / "self_release.md").read_text()
    assert "| T4 | `a.pt` | 2 | 1 | 0 | 50 | 3 |" in md


def test_cli_names_a_missing_policy_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        self_release.main(["--task", "4", "--policy", str(tmp_path / "none.pt"), "--results-dir", str(tmp_path)])
    assert "none.pt" in capsys.readouterr().err
