"""The text notations of option values on the command line and in config files: tasks, benchmark states,
layer widths. Each parser raises a ``ValueError`` naming the value and what is accepted."""

from __future__ import annotations

from typing import Any

from libero_gym import NUM_INIT_STATES

__all__ = ["parse_task", "parse_states", "parse_hidden", "format_states"]


def parse_task(value: Any) -> int:
    """``--task``: 1-10, ``Task4`` or ``LiberoObject-Task4-v0``.

    Raises:
        ValueError: naming the value and what is accepted.
    """
    text = str(value).strip()
    for prefix in ("LiberoObject-", "liberoobject-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.endswith("-v0"):
        text = text[:-3]
    if text.lower().startswith("task") and text[4:].isdigit():
        text = text[4:]
    if text.isdigit() and 1 <= int(text) <= 10:
        return int(text)
    raise ValueError(
        f"unknown task {value!r}: accepted are 1-10, Task1-Task10 or LiberoObject-Task1-v0 ... "
        "LiberoObject-Task10-v0 (Task4 is the bbq sauce)."
    )


def parse_states(value: Any) -> tuple[int, ...]:
    """``--states``: ``all``, ``0-49``, ``0,3,7`` or ``0-4,10`` (or a list of ints); each state in 0-49.

    Raises:
        ValueError: naming the value and what is accepted.
    """
    if isinstance(value, (list, tuple)):
        out = [int(v) for v in value]
    else:
        text = str(value).strip().lower()
        if text in ("all", ""):
            return tuple(range(NUM_INIT_STATES))
        out = []
        try:
            for part in text.split(","):
                if "-" in part:
                    a, b = part.split("-", 1)
                    out.extend(range(int(a), int(b) + 1))
                else:
                    out.append(int(part))
        except ValueError:
            raise ValueError(
                f"--states {value!r} is not accepted: give 'all', a range '0-49', or a list '0,3,7'."
            ) from None
    bad = [s for s in out if not 0 <= s < NUM_INIT_STATES]
    if bad or not out:
        raise ValueError(f"--states {value!r}: benchmark states are 0-{NUM_INIT_STATES - 1}, got {bad or out}.")
    return tuple(out)


def parse_hidden(value: Any) -> tuple[int, ...]:
    """``--hidden``: layer widths like ``256,256`` (or a list of ints), each >= 1.

    Raises:
        ValueError: naming the value and what is accepted.
    """
    try:
        out = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else str(value).split(",")))
    except ValueError:
        raise ValueError(f"--hidden {value!r}: give widths like '256,256'.") from None
    if not out or min(out) < 1:
        raise ValueError(f"--hidden {value!r}: widths must be positive integers.")
    return out


def format_states(states: tuple[int, ...]) -> str:
    """The shortest ``--states`` text of a tuple of states (``all``, ``0-9``, ``0,3,7``)."""
    if tuple(states) == tuple(range(NUM_INIT_STATES)):
        return "all"
    parts: list[str] = []
    i = 0
    while i < len(states):
        j = i
        while j + 1 < len(states) and states[j + 1] == states[j] + 1:
            j += 1
        parts.append(str(states[i]) if j - i < 2 else f"{states[i]}-{states[j]}")
        if 0 < j - i < 2:
            parts.extend(str(s) for s in states[i + 1 : j + 1])
        i = j + 1
    return ",".join(parts)
