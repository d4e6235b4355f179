"""Import of LIBERO / robomimic HDF5 demonstration files (e.g. LIBERO's ``libero_object`` downloads).

Layout read (LIBERO's ``scripts/create_dataset.py`` and robomimic's convention)::

    data                        attrs: problem_info (JSON, "language_instruction"), env_args (JSON),
                                       macros_image_convention ("opengl" or "opencv"; absent: "opengl")
    data/demo_<k>/actions       [T, 7] float: delta end-effector pose + gripper (-1 open, +1 close)
    data/demo_<k>/obs/<key>     [T, ...] per-step observations

Episodes are read in the order of ``k`` (``demo_2`` before ``demo_10``). Observation keys map to ours
(:data:`HDF5_OBS_KEYS`):

======================================  =============================  =========================================
LIBERO key (robomimic / robosuite key)  our key                        notes
======================================  =============================  =========================================
``agentview_rgb`` (``agentview_image``)  ``agentview`` [T, H, W, 3]     flipped upright (see below)
``eye_in_hand_rgb``                     ``wrist`` [T, H, W, 3]          flipped upright
(``robot0_eye_in_hand_image``)
``ee_pos`` (``robot0_eef_pos``)         ``ee_pos`` [T, 3]               metres, world frame
``ee_ori``                              ``ee_ori`` [T, 3]               axis-angle (LIBERO stores no quaternion)
``robot0_eef_quat``                     ``ee_quat`` [T, 4]              robosuite's ``x, y, z, w`` order
``gripper_states`` (``robot0_gripper_qpos``)  ``gripper_states`` [T, 2]  finger joint positions
``joint_states`` (``robot0_joint_pos``)  ``joint_states`` [T, 7]        arm joint positions
======================================  =============================  =========================================

Other ``obs`` keys keep their name. Images: robosuite renders with OpenGL's bottom-up row order, so a file
written with ``macros_image_convention == "opengl"`` (robosuite's default, and LIBERO's released files) holds
every frame upside down; it is flipped vertically to the upright view that ``libero_gym`` renders. (OpenVLA's
LIBERO data rotate the raw frames by 180 degrees instead, which is the upright view mirrored left-right; see
docs/policies.md.) Files written with ``"opencv"`` are already upright.

LIBERO files carry no object poses, so our 29-dim ``"state"`` vector (which holds the target's and the
basket's poses) cannot be filled from them: they train image policies (``obs_mode="rgb"``, e.g. a Hugging
Face VLA). The tokens are the actions' OpenVLA tokens (actions clipped to [-1, 1]).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from libero_tgrpo.demo_set import DEMO_FORMAT_VERSION, DemoFormatError, DemoSet

__all__ = ["HDF5_OBS_KEYS", "HDF5_SUFFIXES", "load_hdf5_demos", "is_hdf5_demos"]

HDF5_OBS_KEYS = {
    "agentview_rgb": "agentview",
    "agentview_image": "agentview",
    "eye_in_hand_rgb": "wrist",
    "robot0_eye_in_hand_image": "wrist",
    "ee_pos": "ee_pos",
    "robot0_eef_pos": "ee_pos",
    "ee_ori": "ee_ori",
    "robot0_eef_quat": "ee_quat",
    "gripper_states": "gripper_states",
    "robot0_gripper_qpos": "gripper_states",
    "joint_states": "joint_states",
    "robot0_joint_pos": "joint_states",
}
"""LIBERO / robomimic observation key -> our observation key."""

IMAGE_KEYS = ("agentview", "wrist")
"""Our keys of camera images (flipped according to the file's image convention)."""

HDF5_SUFFIXES = (".hdf5", ".h5", ".he5")
"""File name endings read as HDF5 demonstrations."""

_IMAGE_CONVENTIONS = ("opengl", "opencv")


def is_hdf5_demos(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file whose name ends like an HDF5 file (:data:`HDF5_SUFFIXES`)."""
    p = Path(path)
    return p.is_file() and p.suffix.lower() in HDF5_SUFFIXES


def _attr_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def load_hdf5_demos(
    path: str | os.PathLike,
    *,
    max_episodes: int | None = None,
    image_convention: str | None = None,
) -> DemoSet:
    """Read a LIBERO / robomimic HDF5 demonstrations file as a :class:`DemoSet`.

    Args:
        path: the ``.hdf5`` file.
        max_episodes: read at most this many episodes (in the order of their ``demo_<k>`` number).
        image_convention: ``"opengl"`` (frames stored upside down: flipped on import) or ``"opencv"`` (stored
            upright); None reads the file's ``data`` attribute ``macros_image_convention`` (absent: ``"opengl"``).

    Returns:
        The demonstrations; ``meta["task"]`` is the LIBERO-Object task whose instruction is the file's
        ``problem_info["language_instruction"]`` (None if none is), ``episode_seeds`` are the ``k`` of
        ``demo_<k>``.

    Raises:
        DemoFormatError: if the file is missing, not HDF5, has no ``data/demo_<k>`` groups, or an episode's
            actions are not [T, 7] or its observations have another length.
        ValueError: on a bad ``image_convention`` or ``max_episodes``.
    """
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("HDF5 demonstrations need h5py: pip install 'libero-tgrpo[hdf5]'.") from e
    path = Path(path)
    if image_convention is not None and image_convention not in _IMAGE_CONVENTIONS:
        raise ValueError(f"image_convention={image_convention!r} is not accepted: choose one of {_IMAGE_CONVENTIONS}.")
    if max_episodes is not None and (not isinstance(max_episodes, int) or max_episodes < 1):
        raise ValueError(f"max_episodes={max_episodes!r} is not accepted: give an int >= 1 or None.")
    if not path.is_file():
        raise DemoFormatError(f"HDF5 demonstrations file {str(path)!r} does not exist.")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DemoFormatError(f"{str(path)!r} is not a readable HDF5 file: {e}") from e
    with f:
        if "data" not in f:
            raise DemoFormatError(f"{str(path)!r} has no 'data' group: not a LIBERO / robomimic demonstrations file.")
        data = f["data"]
        names = [n for n in data if re.fullmatch(r"demo_\d+", n)]
        if not names:
            raise DemoFormatError(f"{str(path)!r} has no data/demo_<k> groups.")
        names.sort(key=lambda n: int(n.split("_")[1]))
        if max_episodes is not None:
            names = names[:max_episodes]
        attrs = {k: _attr_text(v) for k, v in data.attrs.items() if isinstance(v, (str, bytes))}
        convention = image_convention or attrs.get("macros_image_convention", "opengl")
        if convention not in _IMAGE_CONVENTIONS:
            raise DemoFormatError(
                f"{str(path)!r} has macros_image_convention={convention!r}; accepted are {_IMAGE_CONVENTIONS}."
            )
        problem = json.loads(attrs["problem_info"]) if "problem_info" in attrs else {}
        instruction = str(problem.get("language_instruction", "")).strip()
        obs_parts: dict[str, list[np.ndarray]] = {}
        actions, lengths = [], []
        raw_keys: set[str] = set()
        for name in names:
            ep = data[name]
            a = np.asarray(ep["actions"][()], dtype=np.float32)
            if a.ndim != 2 or a.shape[1] != 7:
                raise DemoFormatError(f"{str(path)!r}: {name}/actions has shape {a.shape}; expected [T, 7].")
            if "obs" not in ep:
                raise DemoFormatError(f"{str(path)!r}: {name} has no obs group.")
            for key in ep["obs"]:
                v = np.asarray(ep["obs"][key][()])
                if v.shape[0] != a.shape[0]:
                    raise DemoFormatError(
                        f"{str(path)!r}: {name}/obs/{key} has {v.shape[0]} steps, its actions {a.shape[0]}."
                    )
                ours = HDF5_OBS_KEYS.get(key, key)
                raw_keys.add(key)
                if ours in IMAGE_KEYS and convention == "opengl":
                    v = v[:, ::-1]
                obs_parts.setdefault(ours, []).append(np.ascontiguousarray(v))
            actions.append(a)
            lengths.append(a.shape[0])
    missing = [k for k, parts in obs_parts.items() if len(parts) != len(names)]
    if missing:
        raise DemoFormatError(f"{str(path)!r}: observation keys {missing} are missing from some episodes.")
    obs = {k: np.concatenate(parts) for k, parts in obs_parts.items()}
    for k in IMAGE_KEYS:
        if k in obs:
            obs[k] = obs[k].astype(np.uint8, copy=False)
    act = np.concatenate(actions)
    from libero_gym.tasks import get_task
    from tgrpo import ActionTokenizer

    try:
        task_id: int | None = get_task(instruction).task_id if instruction else None
    except ValueError:
        task_id = None
    meta = {
        "format_version": DEMO_FORMAT_VERSION,
        "task": task_id,
        "instruction": instruction,
        "n": len(names),
        "source": "hdf5",
        "path": str(path),
        "image_convention": convention,
        "obs_keys": {k: HDF5_OBS_KEYS.get(k, k) for k in sorted(raw_keys)},
        "problem_info": problem,
    }
    return DemoSet(
        obs=obs,
        actions=act,
        tokens=ActionTokenizer().encode(act),
        episode_lengths=np.asarray(lengths, dtype=np.int64),
        episode_seeds=np.asarray([int(n.split("_")[1]) for n in names], dtype=np.int64),
        meta=meta,
    )
