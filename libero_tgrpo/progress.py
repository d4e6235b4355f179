"""Progress bars for the pipeline's long stages (tqdm when available and wanted, else silent)."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


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
