"""Writing result files atomically: a reader (or a resumed run) never sees half a file.

Every JSON, Markdown, policy and demonstrations file of the pipeline and of ``benchmarks/`` is written with
:func:`atomic_write` (or :func:`write_json` on top of it): the content goes to ``<name>.tmp`` in the same
directory, is flushed to disk, then replaces the target with ``os.replace``.

:class:`DirLock` makes one process the only writer of a directory, and :func:`check_writable` finds an
output directory that cannot be written before any long work starts.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write", "write_bytes", "write_json", "write_text", "json_default", "DirLock", "DirLockedError", "RunDirError",
           "LOCK_NAME", "check_writable"]

LOCK_NAME = ".lock"
"""The lock file of a run directory (it holds the pid of the process that writes the directory)."""


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


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda p: p.write_bytes(data))


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


class RunDirError(Exception):
    """A run directory that a run may not use: it holds another run, a run with other options than a resume
    gives, or nothing to resume (see :class:`libero_tgrpo.rundir.RunDir`)."""


class DirLockedError(RuntimeError):
    """Another process holds the lock of a directory (the message names the directory and that process)."""


class DirLock:
    """An exclusive lock on a directory: ``fcntl.flock`` on ``<dir>/.lock``, which holds the owner's pid.

    The lock belongs to the open file, so the operating system releases it when the process ends, however it
    ends (SIGKILL, out of memory): a lock file left on disk by a dead process never blocks anyone. The lock is
    taken at once or refused (no waiting). Two ``DirLock`` objects of one process on one directory exclude each
    other too.

    Args:
        directory: the directory (created).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirLock:
        """Take the lock.

        Raises:
            DirLockedError: if another process (or another lock object) holds it, naming its pid.
            OSError: if the directory or its lock file cannot be written.
        """
        if self._fd is not None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DirLockedError(
                f"output directory {str(self.dir)!r} is in use by another process (pid {holder}); wait for it to "
                "end, or give another --output-dir."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the lock file stays; it is free once no process holds it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file releases the flock

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def check_writable(directory: str | os.PathLike, what: str = "output directory") -> Path:
    """Create ``directory`` and write and remove a probe file in it, so that a command fails in a second, before
    its long work, when its output cannot be written.

    Raises:
        OSError: naming the directory and the reason (read-only, permission, no space, not a directory).
    """
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise OSError(e.errno, f"cannot write to the {what} {str(path)!r}: {e.strerror or e}") from e
    return path
