"""Demonstrations in other formats: LeRobotDataset v3.0 (export, import) and LIBERO / robomimic HDF5 (import)."""

import json

import numpy as np
import pytest

from libero_tgrpo.cli import main
from libero_tgrpo.demos import DemoFormatError, DemoSet, demos_file_format, read_demos, save_demos

pa = pytest.importorskip("pyarrow", reason="LeRobotDataset files need the 'lerobot' extra (pyarrow)")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py", reason="HDF5 demonstrations need the 'hdf5' extra (h5py)")

from libero_tgrpo.demo_hdf5 import load_hdf5_demos  # noqa: E402
from libero_tgrpo.demo_lerobot import LEROBOT_VERSION, export_lerobot, load_lerobot  # noqa: E402

TASK4 = "pick up the bbq sauce and place it in the basket"


@pytest.fixture(scope="module")
def demos_with_images(demos):
    """The expert demonstrations plus two camera arrays (any uint8 content: the formats must keep it exactly)."""
    rng = np.random.default_rng(0)
    obs = dict(demos.obs)
    obs["agentview"] = rng.integers(0, 256, (demos.num_steps, 16, 16, 3), dtype=np.uint8)
    obs["wrist"] = rng.integers(0, 256, (demos.num_steps, 16, 16, 3), dtype=np.uint8)
    return DemoSet(obs=obs, actions=demos.actions, tokens=demos.tokens, episode_lengths=demos.episode_lengths,
                   episode_seeds=demos.episode_seeds, meta=demos.meta)


def _assert_same(a: DemoSet, b: DemoSet) -> None:
    assert sorted(a.obs) == sorted(b.obs)
    for k in a.obs:
        assert b.obs[k].dtype == a.obs[k].dtype and b.obs[k].shape == a.obs[k].shape, k
        np.testing.assert_array_equal(b.obs[k], a.obs[k], err_msg=k)
    for name in ("actions", "tokens", "episode_lengths", "episode_seeds"):
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == x.dtype, name
        np.testing.assert_array_equal(y, x, err_msg=name)


def test_lerobot_round_trip_gives_identical_arrays(demos_with_images, tmp_path):
    root = export_lerobot(demos_with_images, tmp_path / "ds")
    back = load_lerobot(root)
    _assert_same(demos_with_images, back)
    assert back.meta == json.loads(json.dumps(demos_with_images.meta))
    assert read_demos(root).num_steps == demos_with_images.num_steps


def test_lerobot_export_has_the_v3_layout(demos_with_images, tmp_path):
    d = demos_with_images
    root = export_lerobot(d, tmp_path / "ds")
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == LEROBOT_VERSION == "v3.0"
    assert info["total_episodes"] == d.num_episodes and info["total_frames"] == d.num_steps
    assert info["fps"] == 20 and info["total_tasks"] == 1
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    f = info["features"]
    assert f["observation.state"] == {"dtype": "float32", "shape": [29], "names": f["observation.state"]["names"]}
    assert f["observation.images.agentview"]["dtype"] == "image"
    assert f["observation.images.wrist"]["shape"] == [16, 16, 3]
    assert f["action"]["shape"] == [7]
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == set(f)
    assert data.column("episode_index").to_pylist() == np.repeat(np.arange(d.num_episodes), d.episode_lengths).tolist()
    assert data.column("index").to_pylist() == list(range(d.num_steps))
    assert data.column("timestamp").to_numpy()[1] == pytest.approx(1 / 20)
    img = data.column("observation.images.agentview").combine_chunks().field("bytes")[0].as_py()
    assert img[:8] == b"\x89PNG\r\n\x1a\n"
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == [TASK4] and tasks.column("task_index").to_pylist() == [0]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    eps = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    assert eps.column("length").to_pylist() == d.episode_lengths.tolist()
    assert eps.column("dataset_to_index").to_pylist() == np.cumsum(d.episode_lengths).tolist()
    stats = json.loads((root / "meta/stats.json").read_text())
    np.testing.assert_allclose(stats["action"]["mean"], d.actions.mean(0), rtol=1e-5)
    assert np.array(stats["observation.images.agentview"]["mean"]).shape == (3, 1, 1)


def test_lerobot_import_of_a_foreign_dataset_maps_keys_and_task(demos_with_images, tmp_path):
    root = export_lerobot(demos_with_images, tmp_path / "ds")
    (root / "meta/libero_tgrpo.json").unlink()  # as a dataset made by LeRobot itself
    back = load_lerobot(root)
    assert back.meta["task"] == 4 and back.instruction == TASK4 and back.meta["source"] == "lerobot"
    assert back.episode_seeds.tolist() == list(range(demos_with_images.num_episodes))
    np.testing.assert_array_equal(back.obs["state"], demos_with_images.obs["state"])


def test_lerobot_rejects_another_version_and_an_existing_directory(demos, tmp_path):
    root = export_lerobot(demos, tmp_path / "ds")
    with pytest.raises(FileExistsError, match="exists"):
        export_lerobot(demos, root)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DemoFormatError, match="version 'v2.1'.*convert_dataset_v21_to_v30"):
        read_demos(root)


def _write_libero_hdf5(path, lengths, *, convention="opengl", instruction=TASK4, size=8):
    """A small file in LIBERO's libero_object layout (as its scripts/create_dataset.py writes it)."""
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"problem_name": "libero_tabletop_manipulation",
                                                 "domain_name": "libero_object", "language_instruction": instruction})
        data.attrs["env_args"] = json.dumps({"type": 1, "env_name": "Libero_Tabletop_Manipulation"})
        if convention is not None:
            data.attrs["macros_image_convention"] = convention
        episodes = {}
        for k, t in lengths.items():
            g = data.create_group(f"demo_{k}")
            ep = {
                "actions": np.clip(rng.normal(0, 0.5, (t, 7)), -1, 1),
                "agentview_rgb": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
                "eye_in_hand_rgb": rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8),
                "ee_pos": rng.normal(size=(t, 3)),
                "ee_ori": rng.normal(size=(t, 3)),
                "gripper_states": rng.normal(size=(t, 2)),
                "joint_states": rng.normal(size=(t, 7)),
            }
            g.create_dataset("actions", data=ep["actions"])
            obs = g.create_group("obs")
            for key, v in ep.items():
                if key != "actions":
                    obs.create_dataset(key, data=v)
            g.create_dataset("states", data=rng.normal(size=(t, 47)))
            g.attrs["num_samples"] = t
            episodes[k] = ep
    return episodes


def test_hdf5_import_maps_libero_keys_flips_images_and_orders_episodes(tmp_path):
    path = tmp_path / "pick_up_the_bbq_sauce_and_place_it_in_the_basket_demo.hdf5"
    eps = _write_libero_hdf5(path, {10: 4, 2: 3})
    d = read_demos(path)
    assert demos_file_format(path) == "hdf5"
    assert d.episode_seeds.tolist() == [2, 10] and d.episode_lengths.tolist() == [3, 4]
    assert d.meta["task"] == 4 and d.instruction == TASK4 and d.meta["image_convention"] == "opengl"
    assert sorted(d.obs) == ["agentview", "ee_ori", "ee_pos", "gripper_states", "joint_states", "wrist"]
    # opengl convention: rows stored bottom-up, flipped vertically on import
    np.testing.assert_array_equal(d.obs["agentview"][:3], eps[2]["agentview_rgb"][:, ::-1])
    np.testing.assert_array_equal(d.obs["wrist"][3:], eps[10]["eye_in_hand_rgb"][:, ::-1])
    np.testing.assert_array_equal(d.obs["ee_pos"][3:], eps[10]["ee_pos"])
    np.testing.assert_array_equal(d.obs["gripper_states"][:3], eps[2]["gripper_states"])
    np.testing.assert_allclose(d.actions, np.concatenate([eps[2]["actions"], eps[10]["actions"]]).astype(np.float32))
    assert d.actions.dtype == np.float32 and d.obs["agentview"].dtype == np.uint8
    from tgrpo import ActionTokenizer

    np.testing.assert_array_equal(d.tokens, ActionTokenizer().encode(d.actions))
    assert load_hdf5_demos(path, max_episodes=1).num_episodes == 1


def test_hdf5_opencv_images_are_kept_as_stored(tmp_path):
    path = tmp_path / "d.hdf5"
    eps = _write_libero_hdf5(path, {0: 2}, convention="opencv", instruction="stack the blocks")
    d = load_hdf5_demos(path)
    np.testing.assert_array_equal(d.obs["agentview"], eps[0]["agentview_rgb"])
    assert d.meta["task"] is None


def test_hdf5_bad_files_are_clear_errors(tmp_path):
    path = tmp_path / "empty.hdf5"
    with h5py.File(path, "w") as f:
        f.create_group("data")
    with pytest.raises(DemoFormatError, match="no data/demo_<k> groups"):
        read_demos(path)
    with pytest.raises(ValueError, match="image_convention='upside'"):
        load_hdf5_demos(path, image_convention="upside")
    with pytest.raises(DemoFormatError, match="not a LeRobotDataset"):
        read_demos(tmp_path)


def test_sft_accepts_all_three_formats(demos, tmp_path, capsys):
    """`libero-tgrpo sft --demos PATH` with our .npz and a LeRobotDataset (state policy), and an HDF5 file
    (images only) refused for the state policy with a message that says what it lacks."""
    save_demos(demos, tmp_path / "d.npz")
    export_lerobot(demos, tmp_path / "lerobot")
    for src in ("d.npz", "lerobot"):
        out = tmp_path / f"sft_{src}"
        assert main(["sft", "--task", "4", "--quiet", "--demos", str(tmp_path / src), "--hidden", "16",
                     "--sft-epochs", "2", "--output-dir", str(out)]) == 0
        rows = [json.loads(line) for line in (out / "sft_metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 2
    _write_libero_hdf5(tmp_path / "libero.hdf5", {0: 3})
    with pytest.raises(SystemExit) as e:
        main(["sft", "--task", "4", "--quiet", "--demos", str(tmp_path / "libero.hdf5"),
              "--output-dir", str(tmp_path / "sft_h5")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "do not fit the policy's observations" in err and "'state'" in err and "ee_pos" in err
    assert not (tmp_path / "sft_h5" / "policy.pt").exists()


def test_sft_on_hdf5_images_with_an_image_policy(tmp_path):
    """An image policy fine-tunes on a LIBERO HDF5 file: the camera keys fit the env's rgb observations."""
    import torch

    from libero_tgrpo.sft import SFTConfig, sft
    from tgrpo.policies import VisionLanguageTokenPolicy

    _write_libero_hdf5(tmp_path / "libero.hdf5", {0: 5, 1: 5}, size=32)
    d = read_demos(tmp_path / "libero.hdf5")
    torch.manual_seed(0)
    policy = VisionLanguageTokenPolicy(cameras=("agentview", "wrist"), state_dim=0, image_size=32, seed=0)
    history = sft(policy, d, SFTConfig(epochs=3, batch_size=5), progress=False)
    assert history[-1]["loss"] < history[0]["loss"]


def test_lerobot_import_decodes_video_features(demos, tmp_path):
    """A camera stored as LeRobot stores videos: one mp4 per camera holding every episode one after another,
    located by the episodes file's videos/<key>/{chunk_index,file_index,from_timestamp} columns."""
    imageio = pytest.importorskip("imageio.v2", reason="video features need imageio-ffmpeg")
    pytest.importorskip("imageio_ffmpeg")
    n = demos.num_steps
    # flat colours that change every frame: H.264 keeps them to a few grey levels
    levels = (np.arange(n) * 37 % 200 + 20).astype(np.uint8)
    frames = np.repeat(levels[:, None, None, None], 32 * 32 * 3, axis=1).reshape(n, 32, 32, 3)
    root = export_lerobot(demos, tmp_path / "ds")
    key = "observation.images.agentview"
    video = root / f"videos/{key}/chunk-000/file-000.mp4"
    video.parent.mkdir(parents=True)
    imageio.mimsave(video, list(frames), fps=20, quality=10)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"][key] = {"dtype": "video", "shape": [32, 32, 3], "names": ["height", "width", "channels"]}
    info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    (root / "meta/info.json").write_text(json.dumps(info))
    ep_path = root / "meta/episodes/chunk-000/file-000.parquet"
    eps = pq.read_table(ep_path)
    starts = np.concatenate([[0], np.cumsum(demos.episode_lengths)[:-1]])
    e = demos.num_episodes
    eps = (eps.append_column(f"videos/{key}/chunk_index", pa.array(np.zeros(e, np.int64)))
              .append_column(f"videos/{key}/file_index", pa.array(np.zeros(e, np.int64)))
              .append_column(f"videos/{key}/from_timestamp", pa.array(starts / 20.0))
              .append_column(f"videos/{key}/to_timestamp", pa.array((starts + demos.episode_lengths) / 20.0)))
    pq.write_table(eps, ep_path)
    back = load_lerobot(root)
    assert back.obs["agentview"].shape == frames.shape and back.obs["agentview"].dtype == np.uint8
    err = np.abs(back.obs["agentview"].astype(int) - frames.astype(int)).max(axis=(1, 2, 3))
    assert err.max() <= 4, err.max()  # each frame is its own, not a neighbour's (levels differ by >= 17)
    np.testing.assert_array_equal(back.obs["state"], demos.obs["state"])


def test_lerobot_tasks_with_an_unnamed_pandas_index(demos, tmp_path):
    """lerobot 0.4.4 writes the task text as an unnamed pandas index ('__index_level_0__', large_string)."""
    root = export_lerobot(demos, tmp_path / "ds")
    (root / "meta/libero_tgrpo.json").unlink()
    path = root / "meta/tasks.parquet"
    table = pq.read_table(path)
    pandas_meta = json.loads(table.schema.metadata[b"pandas"])
    pandas_meta["index_columns"] = ["__index_level_0__"]
    table = pa.table({"task_index": table.column("task_index"),
                      "__index_level_0__": table.column("task").cast(pa.large_string())})
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)
    back = load_lerobot(root)
    assert back.instruction == TASK4 and back.meta["task"] == 4


@pytest.mark.render
def test_hdf5_images_are_imported_as_libero_gym_renders_them(tmp_path):
    """robosuite's own camera frames (what LIBERO's create_dataset.py stores) of a benchmark state, written to
    a LIBERO HDF5 file and imported, look like libero_gym's frames of the same state."""
    import os

    import gymnasium as gym
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    suite = benchmark.get_benchmark_dict()["libero_object"]()
    task = suite.get_task(0)
    bddl = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    raw_env = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=128, camera_widths=128)
    try:
        raw_env.seed(0)
        raw_env.reset()
        obs = raw_env.set_init_state(suite.get_task_init_states(0)[0])
    finally:
        raw_env.close()
    path = tmp_path / "raw.hdf5"
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": task.language})
        g = data.create_group("demo_0")
        g.create_dataset("actions", data=np.zeros((1, 7)))
        g.create_dataset("obs/agentview_rgb", data=obs["agentview_image"][None])
        g.create_dataset("obs/eye_in_hand_rgb", data=obs["robot0_eye_in_hand_image"][None])
    imported = load_hdf5_demos(path)
    env = gym.make("LiberoObject-Task1-v0", obs_mode="rgb", warmup_steps=0)
    try:
        ours, _ = env.reset(seed=0, options={"init_state": 0})
    finally:
        env.close()
    for key, raw_key in (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image")):
        diff = np.abs(imported.obs[key][0].astype(float) - ours[key]).mean()
        unflipped = np.abs(obs[raw_key].astype(float) - ours[key]).mean()
        assert diff < 5 and unflipped > 5 * diff, (key, diff, unflipped)  # the renderers differ slightly
