"""A demonstration set (:class:`DemoSet`) and its own file format, ``.npz``.

A set holds (observation, action) pairs of whole episodes, flattened over time steps; it is what SFT clones.
:func:`save_demos` writes it, :func:`load_demos` reads it back. Sets also come from a LeRobotDataset
(:mod:`libero_tgrpo.demo_lerobot`) or a LIBERO / robomimic HDF5 file (:mod:`libero_tgrpo.demo_hdf5`);
:func:`libero_tgrpo.demos.read_demos` reads any of the three. :func:`demos_digest` names a set by its episodes,
whatever file holds them.

File format (``.npz``, NumPy's standard zip of arrays, version :data:`DEMO_FORMAT_VERSION`):

======================  ==============================  ==================================================
key                     shape / dtype                   meaning
======================  ==============================  ==================================================
``obs.<key>``           [N, ...] (float32 / uint8)      observation before each action, one array per key
                                                        of the env's Dict observation (``state``, images)
``actions``             [N, 7] float32                  the expert's continuous actions
``tokens``              [N, 7] int64                    the actions as OpenVLA action tokens (0-255)
``episode_lengths``     [E] int64                       steps of each episode; episodes are contiguous
``episode_seeds``       [E] int64                       the reset seed of each episode
``meta``                0-d str (JSON)                  format version, task, instruction, seed, noise,
                                                        expert version, tokenizer, package versions, ...
======================  ==============================  ==================================================

Example:
    >>> from libero_tgrpo.demo_expert import generate_demos  # doctest: +SKIP
    >>> path = save_demos(generate_demos(task=4, n=10, seed=0), "demos.npz")  # doctest: +SKIP
    >>> load_demos(path).num_episodes  # doctest: +SKIP
    10
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from libero_tgrpo.files import write_bytes

__all__ = ["DEMO_FORMAT_VERSION", "DIGEST_META_KEYS", "DemoSet", "DemoFormatError", "save_demos", "load_demos",
           "demos_digest"]

DEMO_FORMAT_VERSION = 1
"""Version of the ``.npz`` layout written by :func:`save_demos`; :func:`load_demos` rejects other versions."""


DIGEST_META_KEYS = ("task", "instruction")
"""The ``meta`` fields that :func:`demos_digest` covers: those that training reads (the instruction the policy is
conditioned on, the task it is checked against). The rest of ``meta`` describes how the set was made (seeds,
noise, generation time, package versions, the file it came from) and is left out."""


class DemoFormatError(ValueError):
    """A demonstrations file that is missing, unreadable, or of another format version."""


@dataclass
class DemoSet:
    """A set of expert episodes, flattened over time steps.

    Attributes:
        obs: observation arrays [N, ...] by key (the env's Dict observation keys, e.g. ``"state"``).
        actions: [N, 7] float32 expert actions.
        tokens: [N, 7] int64 action tokens of ``actions`` (OpenVLA convention, 256 bins over [-1, 1]).
        episode_lengths: [E] steps of each episode (the episodes are stored one after the other).
        episode_seeds: [E] reset seed of each episode.
        meta: task, instruction, seed, noise, obs_mode, expert version, format version, versions, ...
    """

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    tokens: np.ndarray
    episode_lengths: np.ndarray
    episode_seeds: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        """N, the number of (observation, action) pairs."""
        return int(self.actions.shape[0])

    @property
    def num_episodes(self) -> int:
        """E, the number of episodes."""
        return int(self.episode_lengths.shape[0])

    @property
    def instruction(self) -> str:
        """The task's language instruction."""
        return str(self.meta.get("instruction", ""))

    def subset(self, episodes: int) -> DemoSet:
        """The first ``episodes`` episodes as a new set."""
        episodes = max(0, min(int(episodes), self.num_episodes))
        n = int(self.episode_lengths[:episodes].sum())
        meta = dict(self.meta, n=episodes)
        return DemoSet(
            obs={k: v[:n] for k, v in self.obs.items()},
            actions=self.actions[:n],
            tokens=self.tokens[:n],
            episode_lengths=self.episode_lengths[:episodes],
            episode_seeds=self.episode_seeds[:episodes],
            meta=meta,
        )


def demos_digest(demos: DemoSet) -> str:
    """``episodes-sha256:<hex>`` of a set's content: what training reads, not the file that holds it.

    Covers every array (each observation key in sorted order, ``actions``, ``tokens``, ``episode_lengths``,
    ``episode_seeds``) by its name, dtype, shape and bytes, and the ``meta`` fields of :data:`DIGEST_META_KEYS`.
    Metadata such as the generation time or package versions is left out, so a cache file regenerated with the
    same episodes, or the same episodes in another format, has the same digest; one changed value does not.
    """
    h = hashlib.sha256()
    arrays = [(f"obs.{k}", demos.obs[k]) for k in sorted(demos.obs)]
    arrays += [(name, getattr(demos, name)) for name in ("actions", "tokens", "episode_lengths", "episode_seeds")]
    for name, value in arrays:
        a = np.ascontiguousarray(value)
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a)  # the buffer itself: a contiguous array is not copied
    h.update(json.dumps({k: demos.meta.get(k) for k in DIGEST_META_KEYS}, sort_keys=True, default=str).encode())
    return "episodes-sha256:" + h.hexdigest()


def save_demos(demos: DemoSet, path: str | os.PathLike) -> Path:
    """Write ``demos`` to ``path`` (compressed ``.npz``) atomically; returns the path."""
    arrays: dict[str, np.ndarray] = {f"obs.{k}": v for k, v in demos.obs.items()}
    arrays.update(
        actions=demos.actions,
        tokens=demos.tokens,
        episode_lengths=demos.episode_lengths,
        episode_seeds=demos.episode_seeds,
        meta=np.array(json.dumps({**demos.meta, "format_version": DEMO_FORMAT_VERSION})),
    )
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def load_demos(path: str | os.PathLike) -> DemoSet:
    """Read a demonstrations file written by :func:`save_demos`.

    Raises:
        DemoFormatError: if the file is missing, is not a demonstrations file, or has another format
            version.
    """
    path = Path(path)
    if not path.is_file():
        raise DemoFormatError(
            f"demonstrations file {str(path)!r} does not exist. Make it with `libero-tgrpo demos --task N "
            "--out PATH` (or drop --demos to use the cached default)."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DemoFormatError(f"{str(path)!r} is not a readable .npz demonstrations file: {e}") from e
    if "meta" not in data or "actions" not in data:
        raise DemoFormatError(f"{str(path)!r} is an .npz file but not a demonstrations file (no 'meta'/'actions').")
    meta = json.loads(str(data["meta"]))
    version = meta.get("format_version")
    if version != DEMO_FORMAT_VERSION:
        raise DemoFormatError(
            f"{str(path)!r} has demonstrations format version {version!r}; this library reads version "
            f"{DEMO_FORMAT_VERSION}. Regenerate it with `libero-tgrpo demos`."
        )
    return DemoSet(
        obs={k[len("obs."):]: v for k, v in data.items() if k.startswith("obs.")},
        actions=data["actions"],
        tokens=data["tokens"],
        episode_lengths=data["episode_lengths"],
        episode_seeds=data["episode_seeds"],
        meta=meta,
    )

