"""Expert demonstrations: generation on training placements, the .npz format, its version stamp, the cache."""

import json
import shutil
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from libero_tgrpo.demos import (
    DEMO_FORMAT_VERSION,
    DemoFormatError,
    demos_cache_path,
    expert_version,
    get_demos,
    load_demos,
    save_demos,
)


def test_demo_set_arrays_and_metadata(demos):
    assert demos.num_episodes == 3
    assert demos.num_steps == int(demos.episode_lengths.sum())
    assert demos.obs["state"].shape == (demos.num_steps, 29)
    assert demos.actions.shape == (demos.num_steps, 7) and demos.actions.dtype == np.float32
    assert demos.tokens.shape == (demos.num_steps, 7) and demos.tokens.min() >= 0 and demos.tokens.max() <= 255
    assert demos.meta["task"] == 4 and "bbq sauce" in demos.instruction
    assert demos.meta["expert_version"] == expert_version()
    assert demos.meta["format_version"] == DEMO_FORMAT_VERSION
    assert "torch" in demos.meta["versions"] and "mujoco" in demos.meta["versions"]
    # training placements: episode j resets with seed * 100000 + j, never a benchmark state
    assert demos.episode_seeds.tolist() == [0, 1, 2]
    assert "never the benchmark states" in demos.meta["placements"]


def test_demos_replay_to_success_from_training_placements(demos):
    """Each stored episode, replayed from its reset seed, shows the stored observations and ends in success."""
    from libero_gym import LiberoObjectEnv

    success_key = demos.meta["terminate_on"]  # the fact that made an episode a success ("is_placed")
    env = gym.make("LiberoObject-Task4-v0", obs_mode="state", terminate_on=success_key)
    placement = LiberoObjectEnv(task=4, warmup_steps=0)  # the same placement, before the warm-up
    placement.reset(seed=0)
    model = placement._model
    free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    xy = np.concatenate([np.arange(model.jnt_qposadr[j], model.jnt_qposadr[j] + 2) for j in free])
    bench = placement.init_states[:, 1 : 1 + model.nq][:, xy]
    starts = np.concatenate([[0], np.cumsum(demos.episode_lengths)])
    try:
        for j, seed in enumerate(demos.episode_seeds.tolist()):
            obs, info = env.reset(seed=seed)
            assert info["init_state"] == -1
            placement.reset(seed=seed)
            # a benchmark state would place every object exactly (see tests/libero_gym/test_env.py)
            assert np.abs(bench - placement._data.qpos[xy]).max(-1).min() > 1e-3, f"episode {j}"
            stored = demos.obs["state"][starts[j] : starts[j + 1]]
            actions = demos.actions[starts[j] : starts[j + 1]]
            for t, action in enumerate(actions):
                np.testing.assert_allclose(obs["state"], stored[t], atol=1e-4, err_msg=f"episode {j}, step {t}")
                assert not info[success_key], f"episode {j} succeeded before its last step ({t})"
                obs, _, terminated, truncated, info = env.step(action)
            assert info[success_key] and terminated, f"episode {j} does not end in success ({success_key})"
            assert info["target_in_basket"]
    finally:
        env.close()
        placement.close()


def test_tokens_match_the_actions(demos):
    from tgrpo import ActionTokenizer

    tok = ActionTokenizer()
    np.testing.assert_array_equal(demos.tokens, tok.encode(demos.actions))
    assert np.abs(tok.decode(demos.tokens) - demos.actions).max() <= tok.bin_width / 2 + 1e-6


def test_round_trip(demos, tmp_path):
    path = save_demos(demos, tmp_path / "d.npz")
    back = load_demos(path)
    for key in demos.obs:
        np.testing.assert_array_equal(back.obs[key], demos.obs[key])
    np.testing.assert_array_equal(back.actions, demos.actions)
    np.testing.assert_array_equal(back.tokens, demos.tokens)
    np.testing.assert_array_equal(back.episode_lengths, demos.episode_lengths)
    assert back.meta == json.loads(json.dumps(demos.meta))


def test_subset(demos):
    one = demos.subset(1)
    assert one.num_episodes == 1 and one.num_steps == int(demos.episode_lengths[0])


def test_cache_is_reused(demo_cache):
    path = demos_cache_path(demo_cache, 4, 3, 0)
    assert path.is_file() and expert_version() in path.name
    mtime = path.stat().st_mtime_ns
    _, got, cached = get_demos(4, 3, seed=0, cache_dir=demo_cache, progress=False)
    assert cached and got == path and path.stat().st_mtime_ns == mtime


def test_a_smaller_set_is_cut_from_a_larger_cached_one_without_running_the_expert(demo_cache, tmp_path,
                                                                                   monkeypatch):
    """The expert keeps the first n successes in seed order, so the cut equals a set generated for n."""
    import libero_tgrpo.demos as demos_module
    from libero_tgrpo.demo_set import demos_digest

    fresh, _, cached = get_demos(4, 2, seed=0, cache_dir=tmp_path / "fresh", progress=False)
    assert not cached
    cache = tmp_path / "cache"
    cache.mkdir()
    larger = shutil.copy(demos_cache_path(demo_cache, 4, 3, 0), cache)

    def no_expert(*args, **kwargs):
        raise AssertionError("the expert ran")

    monkeypatch.setattr(demos_module, "generate_demos", no_expert)
    cut, path, cached = get_demos(4, 2, seed=0, cache_dir=cache, progress=False)
    assert cached and path == demos_cache_path(cache, 4, 2, 0) and path.is_file()
    assert demos_digest(cut) == demos_digest(fresh)
    assert cut.episode_seeds.tolist() == fresh.episode_seeds.tolist()
    assert cut.meta["n"] == 2 and cut.meta["attempts"] == fresh.meta["attempts"]
    assert cut.meta["subset_of"] == Path(larger).name
    assert demos_digest(load_demos(path)) == demos_digest(fresh)
    # only a larger set of the same seed, noise, observations and episode end is cut
    for other in ({"seed": 1}, {"noise": 0.1}, {"terminate_on": "is_placed"}):
        with pytest.raises(AssertionError, match="the expert ran"):
            get_demos(4, 2, cache_dir=cache, progress=False, **{"seed": 0, **other})
    with pytest.raises(AssertionError, match="the expert ran"):
        get_demos(4, 4, seed=0, cache_dir=cache, progress=False)


def test_other_format_version_is_rejected(demos, tmp_path):
    path = save_demos(demos, tmp_path / "d.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    meta["format_version"] = DEMO_FORMAT_VERSION + 1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(DemoFormatError, match="format version"):
        load_demos(tmp_path / "old.npz")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(DemoFormatError, match="does not exist"):
        load_demos(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(DemoFormatError, match="not a demonstrations file"):
        load_demos(tmp_path / "other.npz")


def test_bad_arguments():
    from libero_tgrpo.demos import generate_demos

    with pytest.raises(ValueError, match="n=0"):
        generate_demos(4, 0)
    with pytest.raises(ValueError, match="noise=-1"):
        generate_demos(4, 1, noise=-1)
    with pytest.raises(ValueError, match="1-10"):
        generate_demos(11, 1)


def test_demo_until_chooses_where_the_expert_episodes_end(tmp_path):
    """--demo-until is_success (the default): the pipeline's demonstrations end at LIBERO's success, before the
    release that is_placed episodes go on to; each set is cached under its own name."""
    from libero_tgrpo.config import PipelineConfig

    assert PipelineConfig().demos.until == "is_success"
    from libero_tgrpo.cli import parse
    from libero_tgrpo.stages import run_demos

    cfg = parse(["run", "--num-demos", "1", "--demo-until", "is_success", "--demo-cache", str(tmp_path),
                 "--workers", "1", "--quiet"])[1].options
    assert cfg.demos.until == "is_success"
    short, short_path = run_demos(cfg, say=lambda _: None)
    long, long_path = run_demos(cfg.replace(**{"demos.until": "is_placed"}), say=lambda _: None)
    assert short_path != long_path and "_until-is_placed" in long_path.name and "_until" not in short_path.name
    assert short.meta["terminate_on"] == "is_success" and long.meta["terminate_on"] == "is_placed"
    # the same expert from the same placement: the placed episode is the success episode plus the release
    assert long.num_steps > short.num_steps
    np.testing.assert_array_equal(long.actions[: short.num_steps], short.actions)
    with pytest.raises(SystemExit):
        parse(["run", "--demo-until", "is_done"])


def test_a_noisy_expert_set_records_the_experts_own_actions():
    """With noise the set's labels are the expert's noise-free actions at the states the noisy run reached
    (DART-style), not the executed ones; the same episode replayed in-process gives both."""
    from libero_gym.experts import ScriptedExpert, run_expert_episode
    from libero_tgrpo.demos import generate_demos

    demos = generate_demos(4, 1, seed=0, noise=0.3, workers=1, progress=False)
    env = gym.make("LiberoObject-Task4-v0", obs_mode="state")
    seed = int(demos.episode_seeds[0])
    rec = run_expert_episode(env, ScriptedExpert(4, noise=0.3, seed=seed), seed=seed, max_steps=demos.num_steps)
    env.close()
    np.testing.assert_array_equal(demos.actions, rec["intended_actions"][: demos.num_steps])
    assert np.abs(demos.actions[:, :2] - rec["actions"][: demos.num_steps, :2]).mean() > 0.05


def test_expert_close_steps_sets_when_the_expert_lifts(tmp_path):
    """--expert-close-steps 0: from the same placement the expert starts lifting at the first closed step, earlier
    than the default expert (which holds at least 6 steps); --expert-lift still lifts when the fingers stop, also
    earlier. Each set is cached under its own name and records the values. The defaults add nothing to the cache
    name (sets recorded before the options are found again)."""
    from libero_tgrpo.cli import parse
    from libero_tgrpo.stages import run_demos

    cfg = parse(["run", "--num-demos", "1", "--demo-cache", str(tmp_path), "--workers", "1", "--quiet"])[1].options
    assert cfg.demos.expert_close_steps == 6
    default, default_path = run_demos(cfg, say=lambda _: None)
    quick, quick_path = run_demos(cfg.replace(**{"demos.expert_close_steps": 0}), say=lambda _: None)
    assert default_path == demos_cache_path(tmp_path, 4, 1, 0) and "_close" not in default_path.name
    assert quick_path.name == default_path.name.replace("_state_expert", "_state_close0_expert")
    assert default.meta["expert_close_steps"] == 6 and quick.meta["expert_close_steps"] == 0

    def closed_before_lift(demos):  # steps with the gripper closed and no upward motion, before the first lift
        closed = demos.actions[:, -1] > 0
        first = int(np.argmax(closed))
        up = np.flatnonzero(demos.actions[first:, 2] > 0.2)
        return int(up[0]) if up.size else len(demos.actions) - first

    assert closed_before_lift(quick) < closed_before_lift(default)
    first = int(np.argmax(default.actions[:, -1] > 0))
    np.testing.assert_array_equal(quick.actions[:first], default.actions[:first])  # the same run up to the grasp
    still, still_path = run_demos(cfg.replace(**{"demos.expert_lift": "still"}), say=lambda _: None)
    assert still_path.name == default_path.name.replace("_state_expert", "_state_lift-still_expert")
    assert still.meta["expert_lift"] == "still" and default.meta["expert_lift"] == "timer"
    assert closed_before_lift(quick) < closed_before_lift(still) < closed_before_lift(default)
    np.testing.assert_array_equal(still.actions[:first], default.actions[:first])
    from libero_tgrpo.demos import generate_demos

    with pytest.raises(ValueError, match="close_steps=-1"):
        generate_demos(4, 1, close_steps=-1)
    with pytest.raises(SystemExit):
        parse(["run", "--expert-close-steps", "-1"])
    with pytest.raises(ValueError, match="lift='soon'"):
        generate_demos(4, 1, lift="soon")
    with pytest.raises(SystemExit):
        parse(["run", "--expert-lift", "soon"])

