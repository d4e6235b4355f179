"""Writing result files atomically: a reader (or a resumed run) never sees half a file.

Every JSON, Markdown, policy and demonstrations file of the pipeline and of ``benchmarks/`` is written with
:func:`atomic_write` (or :func:`write_json` on top of it): the content goes to ``<name>.tmp`` in the same
directory, is flushed to disk, then replaces the target with ``os.replace``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "write_json", "write_text", "json_default"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Create ``path`` through ``write(tmp_path)``, then move it into place in one step.

    Args:
        path: the file to write; its directory is created.
        write: writes the whole content to the temporary path it is given (e.g. ``torch.save(obj, p)``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON atomically (NumPy scalars, arrays, tuples and paths converted)."""
    return write_text(path, json.dumps(payload, indent=2, default=json_default))


def json_default(o: Any) -> Any:
    """JSON form of the values the pipeline records that :mod:`json` does not know."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    return str(o)
