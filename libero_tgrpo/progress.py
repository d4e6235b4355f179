"""Progress of the pipeline's long stages: tqdm bars (when available and wanted, else silent) and log lines."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

__all__ = ["progress_bar", "say"]


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: bool, total: int, desc: str, unit: str) -> Any:
    """A tqdm bar with ``update``/``close``, or a silent stand-in when ``progress`` is off or tqdm is missing."""
    if not progress:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)


log = logging.getLogger("libero_tgrpo")


def say(msg: str) -> None:
    """A timestamped progress line on stderr (and to the ``libero_tgrpo`` logger)."""
    log.info(msg)
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
