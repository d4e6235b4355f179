"""Safe, atomic checkpoints.

Writing: :func:`save_checkpoint` writes to a temporary file in the same directory, fsyncs it, then
``os.replace``-s it over the target. A process killed at any moment leaves either the previous checkpoint or
the new one, never a torn file; the temporary files of killed writers are removed by the next save (and by
:func:`remove_stale_temp_files`, which ``tgrpo.train`` calls on resume). A full disk raises
``OSError(ENOSPC, "no space left on device: <path> ...")`` and leaves the previous checkpoint intact.

Reading: :func:`load_checkpoint` loads with ``torch.load(weights_only=True)``, so a file can hold tensors and
plain data (numbers, strings, lists, tuples, dicts) but never code: a crafted pickle is refused with an
:class:`UnsafeCheckpointError` that names the file, before anything in it runs. Every payload is checked
before it is written, so everything this library writes loads that way; checkpoints of earlier versions,
whose NumPy RNG state was a NumPy array, load too (NumPy's array reconstruction is allow-listed, nothing
else).
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "UnsafeCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "remove_stale_temp_files",
    "rng_state",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"

#: Errors of a full disk (or an exhausted quota): reported as "no space left on device".
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)

#: The only non-plain globals that checkpoints of earlier versions hold, allowed on load and nothing more:
#: ``np.random.get_state()`` was stored with its uint32 key array (rebuilt from shape, dtype and raw bytes),
#: and ``torch.__version__`` as a ``TorchVersion`` (a ``str`` subclass). None of them runs code.
_LEGACY_SAFE_GLOBALS: list[Any] = [
    np.zeros(1).__reduce__()[0],  # numpy._core.multiarray._reconstruct (numpy.core... on NumPy 1)
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),  # numpy.dtypes.UInt32DType, built when the key array's dtype is
    torch.torch_version.TorchVersion,
]


class CheckpointError(ValueError):
    """A checkpoint or policy file that cannot be read: missing, truncated, or not written by ``torch.save``."""


class UnsafeCheckpointError(CheckpointError):
    """A file that holds Python objects other than tensors and plain data, which could run code on load."""


def _temp_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.tmp.{pid}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine), e.g. the writer named in a temp file's name."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left behind.

    A temporary file of :func:`save_checkpoint` is ``.<name>.tmp.<pid>``; it is stale when process ``pid``
    no longer runs (or is this process, which is not writing it now). Files of a live process are kept.

    Args:
        path: the checkpoint path (e.g. ``run/checkpoint.pt``).

    Returns:
        The files removed.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp\.(\d+)$")
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = pattern.match(entry.name)
        if m is None:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and pid_alive(pid):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except FileNotFoundError:
            pass
    return removed


def _plain(obj: Any, where: str) -> Any:
    """``obj`` with NumPy values and paths turned into plain data; TypeError on anything unsafe to load."""
    if obj is None or type(obj) in (bool, int, float, str, bytes):
        return obj
    if isinstance(obj, (torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return obj
    for plain_type in (bool, int, float, str, bytes):  # subclasses such as torch.__version__'s TorchVersion
        if isinstance(obj, plain_type):
            return plain_type(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)) if obj.dtype != object else _plain(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {k: _plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        if not isinstance(obj, OrderedDict):
            return out
        ordered = OrderedDict(out)
        if hasattr(obj, "_metadata"):  # module state_dicts carry their version metadata
            ordered._metadata = _plain(obj._metadata, f"{where}._metadata")  # type: ignore[attr-defined]
        return ordered
    if isinstance(obj, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(
        f"checkpoint entry {where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint may only "
        "hold tensors, numbers, strings, None, and lists/tuples/dicts of these (so that loading it never runs "
        "code). Convert it, e.g. to a dict of plain values."
    )


class _RecordingWriter:
    """File wrapper that remembers the first OSError of ``write`` (torch hides it behind a RuntimeError)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def _open_for_write(path: Path) -> Any:
    return open(path, "wb")


def _no_space_error(path: Path, cause: BaseException) -> OSError:
    return OSError(
        errno.ENOSPC,
        f"no space left on device: {path} could not be written ({cause}). The previous file there is intact; "
        "free some space and run again (with --resume / resume=True to continue a run)",
    )


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` with ``torch.save`` to ``path``.

    Args:
        path: destination file.
        payload: tensors (state dicts) and plain data (numbers, strings, lists, tuples, dicts); NumPy values
            and paths are converted to tensors / Python numbers / strings.

    Returns:
        The path written.

    Raises:
        TypeError: if the payload holds another kind of object (it could not be loaded safely), naming it.
        OSError: ``ENOSPC`` with "no space left on device: <path>" when the disk is full; the previous
            checkpoint at ``path`` is left as it was and no temporary file remains.
    """
    path = Path(path)
    payload = _plain(payload, "payload")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = _temp_path(path, os.getpid())
    writer: _RecordingWriter | None = None
    try:
        with _open_for_write(tmp) as f:
            writer = _RecordingWriter(f)
            torch.save(payload, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        os_error = e if isinstance(e, OSError) else (writer.error if writer is not None else None)
        if os_error is None and isinstance(e.__context__, OSError):
            os_error = e.__context__
        if os_error is not None and os_error.errno in _NO_SPACE_ERRNOS:
            raise _no_space_error(path, os_error) from e
        if os_error is not None and os_error is not e:
            raise OSError(os_error.errno, f"could not write {path}: {os_error}") from e
        raise
    try:  # make the rename durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (on the CPU), without running code from it.

    Args:
        path: the file.

    Returns:
        The payload.

    Raises:
        UnsafeCheckpointError: if the file holds Python objects other than tensors and plain data (a crafted
            or foreign pickle); nothing in it has run.
        CheckpointError: if the file is missing, truncated or not a ``torch.save`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist.")
    try:
        with torch.serialization.safe_globals(_LEGACY_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only for the message
            found = []
        allowed = {f"{g.__module__}.{g.__qualname__}" for g in _LEGACY_SAFE_GLOBALS}
        found = [g for g in found if g not in allowed]
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: it holds Python objects other than tensors and plain data"
            + (f" ({', '.join(found)})" if found else "")
            + ", and loading them could run arbitrary code. Files written by tgrpo and libero_tgrpo never hold "
            "such objects. If you trust the file, convert it once: payload = torch.load(path, "
            "weights_only=False), turn its objects into tensors and plain values, and write it with "
            "tgrpo.save_checkpoint."
        ) from e
    except PermissionError:
        raise
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:  # a torn zip: OSError(EINVAL)
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (truncated, or not written by torch.save): {e}"
        ) from e


def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and, when present, CUDA), as plain data and tensors."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": np_state["state"]["pos"]}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states from :func:`rng_state` (or the tuple form of NumPy's state in older checkpoints)."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    if isinstance(np_state, Mapping):
        key = np_state["state"]["key"]
        key = key.numpy() if isinstance(key, torch.Tensor) else key
        np_state = {**np_state, "state": {**np_state["state"], "key": np.asarray(key, dtype=np.uint32)}}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
