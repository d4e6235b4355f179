"""The ``info`` keys the reward functions read, and the check that an env provides them.

The reward lives outside the environment: it reads only the facts below from the ``info`` dict that
``reset()`` and ``step()`` return. ``libero_gym`` provides them (see ``docs/info_contract.md``); any other
environment that provides the same keys, with the same meaning and units, can use the reward wrappers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "BOOL_KEYS",
    "CONTRACT_DOC",
    "INFO_KEYS",
    "NONNEGATIVE_KEYS",
    "PLACEMENT_INFO_KEYS",
    "REQUIRED_INFO_KEYS",
    "InvalidFactError",
    "MissingInfoKeysError",
    "check_info_keys",
    "facts_from_info",
]

CONTRACT_DOC = "docs/info_contract.md"
"""Where the full info contract of ``libero_gym`` is documented."""

INFO_KEYS: dict[str, str] = {
    "is_success": "bool: the task's success predicate (target object inside the basket).",
    "target_grasped": "bool: the gripper holds the target (closing, both fingers in contact with it).",
    "target_lift": "float (m): height of the target above its height at the end of the reset.",
    "target_in_basket": "bool: the target's centre lies inside the basket (footprint and height).",
    "eef_to_target": "float (m): distance from the end-effector to the target.",
    "target_to_basket_xy": "float (m): horizontal (x, y) distance from the target to the basket.",
}
"""The facts every reward mode reads, with their type, unit and meaning.

All modes read the same keys, because every wrapper reports the stage (a progress measure) whatever
reward it returns.
"""

REQUIRED_INFO_KEYS: tuple[str, ...] = tuple(INFO_KEYS)
"""The keys of :data:`INFO_KEYS`, in a fixed order."""

PLACEMENT_INFO_KEYS: dict[str, str] = {
    "is_placed": "bool: the task's success, with the basket undisturbed and the gripper no longer touching the target.",
    "basket_disturbed": "bool: the basket was knocked (lifted, pushed or tilted) since the start of the episode.",
}
"""The further facts read when :attr:`rewards.RewardConfig.require_placement` is on."""

BOOL_KEYS = frozenset({"is_success", "target_grasped", "target_in_basket", *PLACEMENT_INFO_KEYS})
"""The keys read as booleans; the others are read as float64."""

NONNEGATIVE_KEYS = frozenset({"eef_to_target", "target_to_basket_xy"})
"""The float keys that are distances: finite and >= 0. The other float keys must be finite."""


class MissingInfoKeysError(KeyError):
    """An environment's ``info`` lacks keys of the contract.

    Attributes:
        missing: The missing keys, in contract order.
    """

    def __init__(self, missing: Iterable[str], where: str = "the environment's info") -> None:
        self.missing = tuple(missing)
        message = (
            f"{where} lacks the key(s) {list(self.missing)} that the reward wrappers in `rewards` read. "
            f"An environment must return all of {list(REQUIRED_INFO_KEYS)} in the info of reset() and step(); "
            f"see {CONTRACT_DOC} (or rewards.INFO_KEYS) for their meaning and units."
        )
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidFactError(ValueError):
    """A fact of the info contract has the wrong type or a value outside its range.

    Attributes:
        key: The fact's key.
    """

    def __init__(self, key: str, value: Any, expected: str, where: str) -> None:
        self.key = key
        super().__init__(
            f"{where} has {key}={value!r}, which the reward wrappers in `rewards` cannot read: {key} must be "
            f"{expected} (see {CONTRACT_DOC})."
        )


def check_info_keys(
    info: Mapping[str, Any],
    keys: Iterable[str] = REQUIRED_INFO_KEYS,
    rows: np.ndarray | None = None,
    where: str = "the environment's info",
) -> None:
    """Raise :class:`MissingInfoKeysError` naming every key of ``keys`` that ``info`` lacks.

    Args:
        info: A single env's info dict, or a vector env's info (dict of arrays with ``_key`` masks).
        keys: The keys required.
        rows: For a vector info, a bool mask of shape ``(num_envs,)`` of the sub-envs that must provide the
            keys; a key whose ``_key`` mask is False for one of them counts as missing. None for a single env.
        where: How the error names the info that was checked.

    Raises:
        MissingInfoKeysError: If a key is missing.
    """
    missing = [key for key in keys if key not in info]
    if rows is not None:
        missing += [
            key
            for key in keys
            if key in info and f"_{key}" in info and not np.all(np.asarray(info[f"_{key}"], dtype=bool)[rows])
        ]
    if missing:
        raise MissingInfoKeysError([key for key in keys if key in missing], where)


def facts_from_info(
    info: Mapping[str, Any],
    keys: Iterable[str] = REQUIRED_INFO_KEYS,
    rows: np.ndarray | None = None,
    where: str = "the environment's info",
) -> dict[str, np.ndarray]:
    """Read the facts of ``keys`` from an info dict as NumPy arrays (bool or float64).

    Works on a single env's info (0-d arrays) and on a vector env's info (arrays of shape ``(num_envs,)``).

    Args:
        info: The info dict.
        keys: The keys to read.
        rows: As for :func:`check_info_keys`.
        where: As for :func:`check_info_keys`.

    Raises:
        MissingInfoKeysError: If a key is missing.
        InvalidFactError: If a boolean fact is not boolean (a string ``"False"`` is not False), or a float
            fact is not a finite real number, or a distance is negative.
    """
    keys = tuple(keys)
    check_info_keys(info, keys, rows, where)
    return {key: _read_fact(key, info[key], where) for key in keys}


def _read_fact(key: str, value: Any, where: str) -> np.ndarray:
    """``value`` as a bool or float64 array, or :class:`InvalidFactError` if its type or range is wrong."""
    arr = np.asarray(value)
    if key in BOOL_KEYS:
        if arr.dtype != bool:
            raise InvalidFactError(key, value, "a bool (or an array of bools)", where)
        return arr
    if arr.dtype.kind not in "iuf" or arr.dtype == bool:
        raise InvalidFactError(key, value, "a real number (or an array of them)", where)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InvalidFactError(key, value, "finite", where)
    if key in NONNEGATIVE_KEYS and np.any(arr < 0):
        raise InvalidFactError(key, value, "a distance >= 0 (metres)", where)
    return arr
