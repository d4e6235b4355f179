"""The held-out sweep's command-line values: comma-separated lists checked before any unit starts, each refused
with a message that names the flag, the value and what is accepted (``benchmarks.tuning_sweep``)."""

from __future__ import annotations

from benchmarks._common import parse_ints


def floats(text: str, flag: str = "", low: float | None = None) -> list[float]:
    """``--lrs``, ``--kl-betas``, ``--temperatures``, ``--demo-noise``: numbers by commas (each ``>= low``)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise SystemExit(f"{flag} {text!r} is not a comma-separated list of numbers: {e}".lstrip()) from e
    if low is not None and (not values or min(values) < low):
        raise SystemExit(f"{flag} {text!r} is not accepted: give numbers >= {low:g}, by commas")
    return values


def target_kls(text: str) -> list[float | None]:
    """``--target-kls``: numbers by commas, ``none`` or ``off`` for no early stop."""
    return [None if v.strip().lower() in ("none", "off") else float(v) for v in text.split(",") if v.strip()]


def alpha_pairs(text: str) -> list[tuple[float, float] | None]:
    """``--alphas``: pairs ``alpha1:alpha2`` by commas, ``paper`` for the task's paper values
    (``paper,0.5:0.5,0:1``)."""
    out: list[tuple[float, float] | None] = []
    for v in (v.strip() for v in text.split(",")):
        if v == "paper":
            out.append(None)
            continue
        try:
            a1, a2 = (float(x) for x in v.split(":"))
        except ValueError:
            a1 = a2 = float("nan")
        if not (a1 >= 0 and a2 >= 0 and a1 + a2 > 0):
            raise SystemExit(f"--alphas {text!r} is not accepted ({v!r}): give 'paper' or pairs alpha1:alpha2 of "
                             "numbers >= 0, not both 0, by commas, e.g. 'paper,0.5:0.5,0:1'")
        out.append((a1, a2))
    return out


def hidden_list(text: str) -> list[tuple[int, ...]]:
    """``--hidden``: settings separated by commas, widths by ``x`` (``128x128,256x256``)."""
    from libero_tgrpo.parsing import parse_hidden

    try:
        return [parse_hidden(v.strip().replace("x", ",")) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise SystemExit(f"--hidden {text!r} is not accepted ({e}): give settings like '128x128,256x256'") from e


def int_list(text: str, flag: str, low: int = 1) -> list[int]:
    """``--num-demos``, ``--sft-epochs``, ``--expert-close-steps``: integers and ranges (``20,50``, ``0-2``)."""
    try:
        values = parse_ints(text)
    except ValueError as e:
        raise SystemExit(f"{flag} {text!r} is not a list of integers: {e}") from e
    if not values or min(values) < low:
        raise SystemExit(f"{flag} {text!r} is not accepted: give integers >= {low}, e.g. '20,100,200'")
    return values


def choices(text: str, flag: str, accepted: tuple[str, ...]) -> list[str]:
    """A comma-separated list of names, each one of ``accepted`` (``--schedules``, ``--demo-until``)."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or set(values) - set(accepted):
        raise SystemExit(f"{flag} {text!r} is not accepted: choose from {', '.join(accepted)}")
    return values
