"""Pieces shared by the policies of :mod:`tgrpo.policies`: sampling from action-token logits and input checks."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgrpo.policy import dist_stats


def sample_from_logits(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row of action-token logits at a temperature.

    Args:
        logits: [..., n_bins] logits indexed by action token.
        temperature: sampling temperature; ``<= 0`` is greedy (log-probs reported as 0, as in the protocol).

    Returns:
        tokens [...] int64 and their log-probs [...] under ``softmax(logits / temperature)``.
    """
    if temperature <= 0:
        tokens = logits.argmax(-1)
        return tokens, torch.zeros(tokens.shape, dtype=logits.dtype, device=logits.device)
    _, _, logp_all = dist_stats(logits, None, temperature)
    flat = logp_all.reshape(-1, logp_all.shape[-1])
    tokens = torch.multinomial(flat.exp(), 1).view(logp_all.shape[:-1])
    return tokens, logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_stats(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropies of ``tokens`` [...] under ``softmax(logits [..., n_bins] / temperature)``."""
    lp, ent, _ = dist_stats(logits, tokens, temperature)
    return lp, ent


def check_instructions(instructions: Sequence[str], batch: int) -> list[str]:
    """Return the instructions as a list of ``batch`` strings, or raise a ValueError naming the mismatch."""
    if isinstance(instructions, str):
        raise ValueError(
            f"instructions must be a list of {batch} strings (one per observation), got the single string "
            f"{instructions!r}; pass [instruction] * {batch}."
        )
    out = [str(s) for s in instructions]
    if len(out) != batch:
        raise ValueError(
            f"got {len(out)} instructions for a batch of {batch} observations; pass one per row."
        )
    return out


def camera_images(obs: Any, image_key: str, mirror: bool = False) -> np.ndarray:
    """The [B, H, W, 3] uint8 camera images of an observation: ``obs[image_key]`` of a dict observation, or
    ``obs`` itself; float images in [0, 1] are scaled to uint8; ``mirror`` flips them left-right.

    Raises:
        ValueError: naming the observation's keys when ``image_key`` is missing, or the shape when it is not
            a batch of RGB images.
    """
    if isinstance(obs, Mapping):
        if image_key not in obs:
            raise ValueError(
                f"observation key {image_key!r} not found; the observation has {sorted(obs)}. "
                "Pass image_key=... naming the camera to use."
            )
        images = np.asarray(obs[image_key])
    else:
        images = np.asarray(obs)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"camera images have shape {images.shape}; a batch of RGB images [B, H, W, 3] is accepted.")
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
    if mirror:
        images = np.ascontiguousarray(images[:, :, ::-1])
    return images


def check_tokens(tokens: torch.Tensor, batch: int, action_dim: int, n_bins: int) -> torch.Tensor:
    """Validate action tokens [B, D] and return them as int64."""
    tokens = torch.as_tensor(tokens)
    if tokens.shape != (batch, action_dim):
        raise ValueError(
            f"tokens have shape {tuple(tokens.shape)}; expected {(batch, action_dim)} (B, action_dim)."
        )
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= n_bins):
        raise ValueError(
            f"action tokens must lie in 0..{n_bins - 1}, got values in {int(tokens.min())}..{int(tokens.max())}."
        )
    return tokens.long()


#: A Hugging Face Hub model id: "org/name".
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_model(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot name a Hugging Face model, or None when it can: a local directory with a
    ``config.json``, or a Hub id (``"org/name"``) that is not a local path. Checks files only; nothing is
    loaded or downloaded."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            return (
                f"cannot load a model from {str(path)!r}: the local directory has no config.json; point it at a "
                "directory written by save_pretrained (config.json, weights, processor files)."
            )
        return None
    s = str(path)
    if HUB_ID.match(s) and not s.startswith((".", "/", "~")):
        return None
    return (
        f"cannot load a model from {s!r}: no such local directory, and it is not a Hugging Face Hub id "
        "('org/name'); pass a directory written by save_pretrained or a Hub id such as 'openvla/openvla-7b'."
    )


def _side_dir(path: Path, kind: str, pid: int) -> Path:
    return path.with_name(f".{path.name}.{kind}.{pid}")


def _alive(pid: int) -> bool:
    from tgrpo.checkpoint import pid_alive

    return pid != os.getpid() and pid_alive(pid)  # this process is not writing it now


def write_dir_atomically(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Write a directory in full beside ``path``, then move it into place.

    ``write(tmp)`` fills ``.<name>.tmp.<pid>``; only when it returns is the previous directory renamed to
    ``.<name>.old.<pid>``, the new one renamed to ``path`` and the old one removed. A process killed while
    writing leaves the previous directory intact; one killed between the two renames leaves it under the
    ``.old`` name, which :func:`recover_dir` puts back.

    Args:
        path: the directory to (re)write, e.g. ``run/adapter``.
        write: fills the directory it is given (e.g. ``policy.save_pretrained``).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    tmp, old = _side_dir(path, "tmp", pid), _side_dir(path, "old", pid)
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return path


def recover_dir(path: str | os.PathLike) -> list[str]:
    """Clean up after writers of :func:`write_dir_atomically` that were killed: remove their unfinished
    ``.tmp`` directories, and put a ``.old`` directory back when ``path`` is missing (else remove it).
    Directories of live processes are left alone.

    Returns:
        one line per action taken, for the log.
    """
    path = Path(path)
    done: list[str] = []
    if not path.parent.is_dir():
        return done
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(tmp|old)\.(\d+)$")
    found = sorted(
        (m.group(1), int(m.group(2)), e) for e in path.parent.iterdir() if (m := pattern.match(e.name))
    )
    for kind, pid, entry in found:
        if _alive(pid):
            continue
        if kind == "old" and not path.exists():
            os.replace(entry, path)
            done.append(f"restored {path} from {entry.name}, left by a write killed between its renames")
        else:
            shutil.rmtree(entry, ignore_errors=True)
            done.append(f"removed {entry}, left by a killed write of {path.name}")
    return done
