"""Demonstrations for the pipeline: the expert's set from the cache (made on a miss), or a file of any format.

:func:`get_demos` returns the cached set of the scripted expert (:mod:`libero_tgrpo.demo_expert`) for
``(task, n, seed, noise, obs_mode)`` and the expert's version, generating and caching it first when it is not
there; :func:`read_demos` reads a demonstrations path in any of :data:`DEMO_FILE_FORMATS`;
:func:`select_observations` checks a set against a policy's observations. The set and its ``.npz`` format
are in :mod:`libero_tgrpo.demo_set`; their names, and the expert's, are also importable from here.

Example:
    >>> demos, path, cached = get_demos(task=4, n=10, seed=0)  # doctest: +SKIP
    >>> read_demos(path).num_episodes  # doctest: +SKIP
    10
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libero_tgrpo.demo_expert import EPISODE_SEED_STRIDE, MAX_ATTEMPTS_FACTOR, expert_version, generate_demos
from libero_tgrpo.demo_set import DEMO_FORMAT_VERSION, DemoFormatError, DemoSet, load_demos, save_demos
from libero_tgrpo.stage_configs import DEMO_UNTIL, EXPERT_CLOSE_STEPS, EXPERT_LIFT

__all__ = [
    "DEMO_FORMAT_VERSION",
    "DemoSet",
    "DemoFormatError",
    "expert_version",
    "generate_demos",
    "save_demos",
    "load_demos",
    "DEMO_FILE_FORMATS",
    "demos_file_format",
    "read_demos",
    "select_observations",
    "demos_cache_path",
    "get_demos",
    "EPISODE_SEED_STRIDE",
    "MAX_ATTEMPTS_FACTOR",
]


DEMO_FILE_FORMATS = ("npz", "lerobot", "hdf5")
"""Demonstration formats :func:`read_demos` reads: our ``.npz`` (:func:`save_demos`), a LeRobotDataset v3
directory (:mod:`libero_tgrpo.demo_lerobot`), a LIBERO / robomimic HDF5 file (:mod:`libero_tgrpo.demo_hdf5`)."""


def demos_file_format(path: str | os.PathLike) -> str:
    """The format of a demonstrations path: ``"lerobot"`` (a directory with ``meta/info.json``), ``"hdf5"``
    (a file ending in ``.hdf5``/``.h5``/``.he5``) or ``"npz"`` (any other file).

    Raises:
        DemoFormatError: if the path does not exist or is a directory that is not a LeRobotDataset.
    """
    from libero_tgrpo.demo_hdf5 import HDF5_SUFFIXES

    p = Path(path)
    if p.is_dir():
        if (p / "meta" / "info.json").is_file():
            return "lerobot"
        raise DemoFormatError(
            f"{str(p)!r} is a directory but not a LeRobotDataset (no meta/info.json). Accepted demonstrations: "
            "an .npz of `libero-tgrpo demos`, a LeRobotDataset directory, a LIBERO/robomimic .hdf5 file."
        )
    if not p.is_file():
        raise DemoFormatError(
            f"demonstrations path {str(p)!r} does not exist. Accepted: an .npz of `libero-tgrpo demos --out PATH`, a "
            "LeRobotDataset directory, a LIBERO/robomimic .hdf5 file (or drop --demos to use the cached default)."
        )
    return "hdf5" if p.suffix.lower() in HDF5_SUFFIXES else "npz"


def read_demos(path: str | os.PathLike) -> DemoSet:
    """Read demonstrations in any of :data:`DEMO_FILE_FORMATS`, chosen by :func:`demos_file_format`.

    Raises:
        DemoFormatError: if the path does not exist or is not demonstrations of an accepted format.
    """
    fmt = demos_file_format(path)
    if fmt == "lerobot":
        from libero_tgrpo.demo_lerobot import load_lerobot

        return load_lerobot(path)
    if fmt == "hdf5":
        from libero_tgrpo.demo_hdf5 import load_hdf5_demos

        return load_hdf5_demos(path)
    return load_demos(path)


def select_observations(demos: DemoSet, observation_space: Any, source: str = "the demonstrations") -> DemoSet:
    """``demos`` with only the observation keys of a Dict ``observation_space``, checked against its shapes.

    Raises:
        ValueError: if a key of the space is missing from ``demos.obs`` or has another per-step shape; the
            message names the keys the demonstrations have.
    """
    spaces = dict(observation_space.spaces)
    have = {k: tuple(v.shape[1:]) for k, v in demos.obs.items()}
    bad = [k for k, sp in spaces.items() if have.get(k) != tuple(sp.shape)]
    if bad:
        want = {k: tuple(sp.shape) for k, sp in spaces.items()}
        if demos.meta.get("source") == "hdf5":
            hint = ("LIBERO/robomimic HDF5 files carry camera images but not the 29-dim 'state' (no object poses): "
                    "fine-tune an image policy on them (--policy with a Hugging Face model, obs_mode 'rgb'), with "
                    "the env's image size equal to the files' (LIBERO: 128).")
        else:
            hint = ("Make demonstrations with the policy's observations, e.g. `libero-tgrpo demos --obs-mode "
                    "rgb_state` for the vision policy.")
        raise ValueError(
            f"{source} do not fit the policy's observations: it reads {want}, the demonstrations have {have}. "
            + hint
        )
    return dataclasses.replace(demos, obs={k: demos.obs[k] for k in spaces})


def demos_cache_path(
    cache_dir: str | os.PathLike,
    task: int,
    n: int,
    seed: int,
    noise: float = 0.0,
    obs_mode: str = "state",
    terminate_on: str = DEMO_UNTIL,
    close_steps: int = EXPERT_CLOSE_STEPS,
    lift: str = EXPERT_LIFT,
) -> Path:
    """Cache file of a demonstration set: one name per (task, n, seed, noise, obs_mode, episode end, expert's
    close_steps and lift rule, expert version); the defaults add nothing to the name."""
    end = "" if terminate_on == "is_success" else f"_until-{terminate_on}"
    end += "" if close_steps == EXPERT_CLOSE_STEPS else f"_close{close_steps}"
    end += "" if lift == EXPERT_LIFT else f"_lift-{lift}"
    return Path(cache_dir) / (
        f"task{task}_n{n}_seed{seed}_noise{noise:g}_{obs_mode}{end}_expert-{expert_version()}"
        f"_v{DEMO_FORMAT_VERSION}.npz"
    )


def get_demos(
    task: int,
    n: int,
    *,
    seed: int = 0,
    noise: float = 0.0,
    obs_mode: str = "state",
    cache_dir: str | os.PathLike = "outputs/demos",
    workers: int = 2,
    terminate_on: str = DEMO_UNTIL,
    close_steps: int = EXPERT_CLOSE_STEPS,
    lift: str = EXPERT_LIFT,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[DemoSet, Path, bool]:
    """Load a cached demonstration set, or generate and cache it.

    The expert keeps the first ``n`` successful episodes in reset-seed order, so a set of ``n`` is the first
    ``n`` episodes of any larger set with the same (task, seed, noise, obs_mode, episode end, expert's
    ``close_steps`` and lift rule, expert version).
    On a miss, the smallest such larger set in ``cache_dir`` is cut to ``n`` (:meth:`DemoSet.subset`) and written
    under this set's name instead of running the expert again; a study over several numbers of demonstrations
    generates only its largest set.

    Returns:
        ``(demos, path, cached)``: ``cached`` is True when no expert episode was run: the file already existed,
        or the set was cut from a larger cached one.
    """
    path = demos_cache_path(cache_dir, task, n, seed, noise, obs_mode, terminate_on, close_steps, lift)
    if path.is_file():
        try:
            demos = load_demos(path)
            if log is not None:
                log(f"demos: reusing {path} ({demos.num_episodes} episodes, {demos.num_steps} steps)")
            return demos, path, True
        except DemoFormatError:
            pass
    demos = _first_of_larger_set(path, n, seed)
    if demos is not None:
        save_demos(demos, path)
        if log is not None:
            log(f"demos: the first {n} episodes of {demos.meta['subset_of']}, written to {path} "
                f"({demos.num_steps} steps)")
        return demos, path, True
    demos = generate_demos(task, n, seed=seed, noise=noise, close_steps=close_steps, lift=lift, obs_mode=obs_mode,
                           workers=workers, terminate_on=terminate_on, progress=progress, log=log)
    save_demos(demos, path)
    return demos, path, False


def _first_of_larger_set(path: Path, n: int, seed: int) -> DemoSet | None:
    """The first ``n`` episodes of the smallest readable cached set that differs from ``path`` only by a larger
    number of episodes, with its meta describing the cut set; None when there is none."""
    head, sep, tail = path.name.partition(f"_n{n}_")
    if not sep:
        return None
    larger: list[tuple[int, Path]] = []
    for other in path.parent.glob(f"{head}_n*_{tail}"):
        match = re.fullmatch(re.escape(head) + r"_n(\d+)_" + re.escape(tail), other.name)
        if match and int(match.group(1)) > n:
            larger.append((int(match.group(1)), other))
    for _, other in sorted(larger):
        try:
            whole = load_demos(other)
        except DemoFormatError:
            continue
        if whole.num_episodes < n:
            continue
        part = whole.subset(n)
        # Episode j resets with seed * EPISODE_SEED_STRIDE + j: the n-th kept episode's index counts the attempts.
        attempts = int(part.episode_seeds[-1]) - seed * EPISODE_SEED_STRIDE + 1
        part.meta.update(attempts=attempts, expert_success_rate=n / attempts, subset_of=other.name)
        return part
    return None
