"""Demonstrations as a LeRobotDataset (format ``v3.0``): export and import with pyarrow.

The layout is LeRobot's published one, written and read here with ``pyarrow`` (and Pillow for the images), so
the ``lerobot`` package and its dependencies (torch, datasets, huggingface_hub, av, ...) are not needed:

========================================  ===========================================================================
path under the dataset root               what it holds
========================================  ===========================================================================
``meta/info.json``                        ``codebase_version`` ``"v3.0"``, ``fps``, totals, path templates, features
``meta/stats.json``                       per feature ``min``/``max``/``mean``/``std``/``count`` (images: per channel,
                                          in [0, 1], shape (3, 1, 1))
``meta/tasks.parquet``                    one row per task: ``task_index``, ``task`` (the pandas index)
``meta/episodes/chunk-000/file-000.parquet``  one row per episode: ``episode_index``, ``tasks``, ``length``,
                                          ``data/chunk_index``, ``data/file_index``, ``dataset_from_index``,
                                          ``dataset_to_index``, ``meta/episodes/chunk_index``, ``.../file_index``
``data/chunk-000/file-000.parquet``       one row per frame: the features below plus ``timestamp``,
                                          ``frame_index``, ``episode_index``, ``index``, ``task_index``
``meta/libero_tgrpo.json``                our own: the set's ``meta`` and ``episode_seeds`` (LeRobot ignores it)
========================================  ===========================================================================

Observation keys (:data:`OBS_FEATURES`): ``state`` -> ``observation.state`` (float32 [29]); a camera ``X``
(``agentview``, ``wrist``) -> ``observation.images.X``; any other key ``X`` -> ``observation.X``; the action ->
``action`` (float32 [7]). Images are stored with the feature dtype ``"image"`` (PNG bytes in the parquet
file, lossless), which the format allows beside ``"video"``: a round trip gives back identical arrays.
On import, features of dtype ``"video"`` are decoded from their mp4 files with imageio-ffmpeg (lossy by
nature). Action tokens are not stored: they are the actions' tokens and are recomputed on import.

Example:
    >>> export_lerobot(demos, "outputs/task4_lerobot")  # doctest: +SKIP
    >>> load_lerobot("outputs/task4_lerobot").num_episodes  # doctest: +SKIP
    20
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from libero_tgrpo.demo_set import DEMO_FORMAT_VERSION, DemoFormatError, DemoSet

__all__ = ["LEROBOT_VERSION", "LEROBOT_FPS", "OBS_FEATURES", "export_lerobot", "load_lerobot", "is_lerobot_dataset"]

LEROBOT_VERSION = "v3.0"
"""``codebase_version`` written to ``meta/info.json``; :func:`load_lerobot` reads ``v3.x``."""

LEROBOT_FPS = 20
"""Frames per second of our demonstrations (LIBERO's control frequency)."""

OBS_FEATURES = {"state": "observation.state"}
"""Observation keys with a fixed LeRobot feature name; cameras go to ``observation.images.<key>``, any other
key to ``observation.<key>``."""

_FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
_CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
_DATA_PATH = "data/" + _CHUNK_FILE + ".parquet"
_VIDEO_PATH = "videos/{video_key}/" + _CHUNK_FILE + ".mp4"
_EPISODES_PATH = "meta/episodes/" + _CHUNK_FILE + ".parquet"
_SIDECAR = "meta/libero_tgrpo.json"


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401  (pa.compute)
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "LeRobotDataset files need pyarrow and Pillow: pip install 'libero-tgrpo[lerobot]'."
        ) from e
    return pa, pq


def is_lerobot_dataset(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory with ``meta/info.json`` (a LeRobotDataset root)."""
    return (Path(path) / "meta" / "info.json").is_file()


def _is_image(a: np.ndarray) -> bool:
    return a.dtype == np.uint8 and a.ndim == 4 and a.shape[-1] == 3


def _feature_name(key: str, a: np.ndarray) -> str:
    if key in OBS_FEATURES:
        return OBS_FEATURES[key]
    return f"observation.images.{key}" if _is_image(a) else f"observation.{key}"


def _obs_key(feature: str) -> str | None:
    for key, name in OBS_FEATURES.items():
        if feature == name:
            return key
    for prefix in ("observation.images.", "observation."):
        if feature.startswith(prefix):
            return feature[len(prefix):]
    return None


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _numeric_stats(a: np.ndarray) -> dict[str, list]:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    q = {f"q{int(p * 100):02d}": np.quantile(a, p, axis=0).tolist() for p in (0.01, 0.10, 0.50, 0.90, 0.99)}
    return {"min": a.min(0).tolist(), "max": a.max(0).tolist(), "mean": a.mean(0).tolist(),
            "std": a.std(0).tolist(), "count": [int(a.shape[0])], **q}


def _image_stats(a: np.ndarray) -> dict[str, list]:
    x = a.reshape(-1, 3).astype(np.float64) / 255.0

    def per_channel(v: np.ndarray) -> list:
        return v.reshape(3, 1, 1).tolist()

    return {"min": per_channel(x.min(0)), "max": per_channel(x.max(0)), "mean": per_channel(x.mean(0)),
            "std": per_channel(x.std(0)), "count": [int(a.shape[0])]}


def _vector_column(pa: Any, a: np.ndarray) -> tuple[Any, list[int], str]:
    """An arrow column of per-frame vectors (fixed-size lists) or scalars, with its shape and dtype name."""
    a = np.ascontiguousarray(a)
    if a.ndim == 1:
        return pa.array(a), [1], str(a.dtype)
    if a.ndim != 2:
        raise ValueError(f"an array of shape {a.shape} cannot be a LeRobot vector feature (only [N] or [N, d]).")
    col = pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])
    return col, [int(a.shape[1])], str(a.dtype)


def _tasks_table(pa: Any, tasks: list[str]) -> Any:
    """``meta/tasks.parquet`` as LeRobot writes it with pandas: ``task_index`` with the task text as the index."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(
    demos: DemoSet,
    root: str | os.PathLike,
    *,
    fps: int = LEROBOT_FPS,
    robot_type: str = "panda",
    overwrite: bool = False,
) -> Path:
    """Write ``demos`` as a LeRobotDataset (v3.0) directory.

    Args:
        demos: the demonstrations.
        root: the dataset directory (created; it must not exist unless ``overwrite``).
        fps: frames per second recorded in ``info.json`` (timestamps are ``frame_index / fps``).
        robot_type: ``robot_type`` of ``info.json``.
        overwrite: replace an existing directory.

    Returns:
        The dataset root.

    Raises:
        FileExistsError: if ``root`` exists and ``overwrite`` is False.
    """
    pa, pq = _pa()
    root = Path(root)
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{str(root)!r} exists: give a new directory or overwrite=True.")
        shutil.rmtree(root)
    n, e = demos.num_steps, demos.num_episodes
    lengths = np.asarray(demos.episode_lengths, dtype=np.int64)
    episode_index = np.repeat(np.arange(e, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    frame_index = np.arange(n, dtype=np.int64) - np.repeat(starts, lengths)
    task = demos.instruction or str(demos.meta.get("task", "task"))

    columns: dict[str, Any] = {}
    features: dict[str, dict[str, Any]] = {}
    stats: dict[str, dict[str, list]] = {}
    for key, a in demos.obs.items():
        name = _feature_name(key, a)
        if _is_image(a):
            struct = pa.StructArray.from_arrays(
                [pa.array([_png(f) for f in a], pa.binary()), pa.array([None] * n, pa.string())], ["bytes", "path"]
            )
            columns[name] = struct
            features[name] = {"dtype": "image", "shape": list(a.shape[1:]), "names": ["height", "width", "channels"]}
            stats[name] = _image_stats(a)
        else:
            col, shape, dtype = _vector_column(pa, a)
            columns[name] = col
            names = None
            if key == "state":
                from libero_gym.env import STATE_LAYOUT

                names = [f"{part}_{i}" for part, s in STATE_LAYOUT.items() for i in range(s.stop - s.start)]
                names = names if len(names) == shape[0] else None
            features[name] = {"dtype": dtype, "shape": shape, "names": names}
            stats[name] = _numeric_stats(a)
    actions = np.asarray(demos.actions, dtype=np.float32)
    columns["action"] = _vector_column(pa, actions)[0]
    features["action"] = {"dtype": "float32", "shape": [7],
                          "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]}
    stats["action"] = _numeric_stats(actions)
    frame_cols = {
        "timestamp": (frame_index / fps).astype(np.float32),
        "frame_index": frame_index,
        "episode_index": episode_index,
        "index": np.arange(n, dtype=np.int64),
        "task_index": np.zeros(n, dtype=np.int64),
    }
    for name, a in frame_cols.items():
        columns[name] = pa.array(a)
        features[name] = {"dtype": str(a.dtype), "shape": [1], "names": None}
        stats[name] = _numeric_stats(a)

    data_path = root / _DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), data_path)
    (root / "meta").mkdir(parents=True, exist_ok=True)
    pq.write_table(_tasks_table(pa, [task]), root / "meta" / "tasks.parquet")
    episodes = pa.table({
        "episode_index": pa.array(np.arange(e, dtype=np.int64)),
        "tasks": pa.array([[task]] * e, pa.list_(pa.string())),
        "length": pa.array(lengths),
        "data/chunk_index": pa.array(np.zeros(e, np.int64)),
        "data/file_index": pa.array(np.zeros(e, np.int64)),
        "dataset_from_index": pa.array(starts),
        "dataset_to_index": pa.array(starts + lengths),
        "meta/episodes/chunk_index": pa.array(np.zeros(e, np.int64)),
        "meta/episodes/file_index": pa.array(np.zeros(e, np.int64)),
    })
    ep_path = root / _EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(episodes, ep_path)
    info = {
        "codebase_version": LEROBOT_VERSION,
        "robot_type": robot_type,
        "total_episodes": e,
        "total_frames": n,
        "total_tasks": 1,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": int(fps),
        "splits": {"train": f"0:{e}"},
        "data_path": _DATA_PATH,
        "video_path": None,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    (root / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))
    sidecar = {"meta": {**demos.meta, "format_version": DEMO_FORMAT_VERSION},
               "episode_seeds": np.asarray(demos.episode_seeds).tolist()}
    (root / _SIDECAR).write_text(json.dumps(sidecar, indent=2, default=str))
    return root


def _to_numpy(col: Any, feature: dict[str, Any]) -> np.ndarray:
    """A per-frame numeric column (scalars, lists or fixed-size lists) as an [N, ...] array of the feature's dtype."""
    pa, _ = _pa()
    col = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    dtype = np.dtype(feature.get("dtype", "float32"))
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1).astype(dtype, copy=False)
    return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)


def _video_frames(root: Path, info: dict[str, Any], key: str, episodes: Any, table: Any) -> np.ndarray:
    """Frames of video feature ``key`` for every row of ``table`` (decoded with imageio-ffmpeg)."""
    try:
        import imageio.v2 as imageio
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("video features need imageio and imageio-ffmpeg: pip install imageio imageio-ffmpeg") from e
    fps = float(info["fps"])
    template = info.get("video_path") or _VIDEO_PATH
    ep = {c: episodes.column(c).to_pylist() for c in episodes.column_names}
    cache: dict[str, list[np.ndarray]] = {}
    ep_rows = {idx: i for i, idx in enumerate(ep["episode_index"])}
    out = []
    for ep_idx, ts in zip(table.column("episode_index").to_pylist(), table.column("timestamp").to_pylist()):
        i = ep_rows[ep_idx]
        path = str(root / template.format(video_key=key, chunk_index=ep[f"videos/{key}/chunk_index"][i],
                                          file_index=ep[f"videos/{key}/file_index"][i]))
        if path not in cache:
            with imageio.get_reader(path, "ffmpeg") as reader:
                cache[path] = [np.asarray(f) for f in reader]
        start = float(ep.get(f"videos/{key}/from_timestamp", [0.0] * len(ep_rows))[i])
        out.append(cache[path][int(round((start + ts) * fps))])
    return np.stack(out)


def _read_tasks(pa: Any, pq: Any, path: Path) -> dict[int, str]:
    """``task_index -> task`` of ``meta/tasks.parquet``. The text is the pandas index of the table LeRobot
    writes: a column named ``task``, or an unnamed index stored as ``__index_level_0__``."""
    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(b"pandas")
    candidates = ["task", *(json.loads(meta).get("index_columns", []) if meta else [])]
    candidates += [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    for name in candidates:
        if isinstance(name, str) and name in table.column_names and name != "task_index":
            return dict(zip(table.column("task_index").to_pylist(), table.column(name).to_pylist()))
    raise DemoFormatError(f"{str(path)!r} has no task text column (columns: {table.column_names}).")


def load_lerobot(root: str | os.PathLike, *, instruction: str | None = None) -> DemoSet:
    """Read a LeRobotDataset (v3.x) directory as a :class:`DemoSet`.

    Features map back to observation keys as :func:`export_lerobot` names them (``observation.state`` ->
    ``state``, ``observation.images.X`` -> ``X``, ``observation.X`` -> ``X``); ``action`` is the action.
    A set written by :func:`export_lerobot` comes back with its ``meta`` and ``episode_seeds``; for another
    dataset the episode seeds are the episode indices and ``meta["task"]`` is the LIBERO-Object task whose
    instruction matches the dataset's task (None when none does).

    Args:
        root: the dataset directory.
        instruction: keep the episodes of this task text only; needed when the dataset has several tasks.

    Raises:
        DemoFormatError: if ``root`` is not a LeRobotDataset of version 3, has no 7-dim ``action``, or holds
            several tasks and ``instruction`` is not given (the message lists them).
    """
    pa, pq = _pa()
    root = Path(root)
    if not is_lerobot_dataset(root):
        raise DemoFormatError(f"{str(root)!r} is not a LeRobotDataset directory (no meta/info.json).")
    info = json.loads((root / "meta" / "info.json").read_text())
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise DemoFormatError(
            f"{str(root)!r} is a LeRobotDataset of version {version!r}; this library reads version 3 "
            f"({LEROBOT_VERSION}). Convert it with lerobot's `convert_dataset_v21_to_v30` script."
        )
    features: dict[str, dict[str, Any]] = info.get("features", {})
    if "action" not in features or list(features["action"].get("shape", [])) != [7]:
        raise DemoFormatError(
            f"{str(root)!r} has no 7-dim 'action' feature (found {features.get('action')!r}); the policies here "
            "act with 7-dim end-effector deltas + gripper."
        )
    files = sorted((root / "data").glob("*/*.parquet"))
    if not files:
        raise DemoFormatError(f"{str(root)!r} has no data/chunk-*/file-*.parquet files.")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    table = table.take(pa.compute.sort_indices(table, [("index", "ascending")]))
    tasks = _read_tasks(pa, pq, root / "meta" / "tasks.parquet")
    present = sorted(set(table.column("task_index").to_pylist()))
    if instruction is not None:
        wanted = [i for i, t in tasks.items() if t == instruction]
        if not wanted:
            raise DemoFormatError(f"instruction={instruction!r} is not a task of {str(root)!r}: {list(tasks.values())}")
        table = table.filter(pa.compute.is_in(table.column("task_index"), pa.array(wanted, pa.int64())))
        present = wanted
    elif len(present) > 1:
        raise DemoFormatError(
            f"{str(root)!r} holds {len(present)} tasks; choose one with instruction=: {[tasks[i] for i in present]}"
        )
    task_text = tasks[present[0]]

    episode_index = table.column("episode_index").to_numpy()
    change = np.flatnonzero(np.diff(episode_index)) + 1
    bounds = np.concatenate([[0], change, [len(episode_index)]])
    lengths = np.diff(bounds).astype(np.int64)
    ep_ids = episode_index[bounds[:-1]].astype(np.int64)

    episodes_meta = None
    obs: dict[str, np.ndarray] = {}
    for name, ft in features.items():
        key = _obs_key(name)
        if key is None or name in _FRAME_COLUMNS:
            continue
        if ft.get("dtype") == "image":
            col = table.column(name).combine_chunks()
            data = col.field("bytes").to_pylist()
            obs[key] = np.stack([_decode_image(b) for b in data])
        elif ft.get("dtype") == "video":
            if episodes_meta is None:
                ep_files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
                episodes_meta = pa.concat_tables([pq.read_table(f) for f in ep_files])
            obs[key] = _video_frames(root, info, name, episodes_meta, table)
        elif name in table.column_names:
            obs[key] = _to_numpy(table.column(name), ft)
    actions = _to_numpy(table.column("action"), {"dtype": "float32"})

    sidecar_path = root / _SIDECAR
    if sidecar_path.is_file() and instruction is None:
        sidecar = json.loads(sidecar_path.read_text())
        meta, seeds = sidecar["meta"], np.asarray(sidecar["episode_seeds"], dtype=np.int64)
    else:
        from libero_gym.tasks import get_task

        try:
            task_id: int | None = get_task(task_text).task_id
        except (KeyError, ValueError):
            task_id = None
        meta = {"format_version": DEMO_FORMAT_VERSION, "task": task_id, "instruction": task_text,
                "n": int(lengths.size), "source": "lerobot", "path": str(root), "fps": info.get("fps"),
                "codebase_version": version, "robot_type": info.get("robot_type")}
        seeds = ep_ids
    from tgrpo import ActionTokenizer

    return DemoSet(obs=obs, actions=actions, tokens=ActionTokenizer().encode(np.clip(actions, -1.0, 1.0)),
                   episode_lengths=lengths, episode_seeds=seeds, meta=meta)
