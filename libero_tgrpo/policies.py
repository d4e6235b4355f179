"""Building, saving and loading the token-action policies the pipeline trains.

Three kinds (``--policy`` of the command line):

=================  ==========================================  ==========================================
kind               policy                                      observation mode of the env
=================  ==========================================  ==========================================
``state``          :class:`tgrpo.MLPTokenPolicy` (built-in)    ``"state"`` (29-dim vector)
``vision``         ``tgrpo.policies.VisionLanguageTokenPolicy``  ``"rgb_state"`` (two cameras + state)
a path or Hub id   ``tgrpo.policies.HFVLAPolicy`` (LoRA)        ``"rgb"``
=================  ==========================================  ==========================================

A policy file holds the policy's ``state_dict`` and a *spec*: the kind, the constructor arguments, the
observation mode, the task and how the weights were made (SFT, TGRPO, ...), so that :func:`load_policy`
rebuilds the same policy without other information. Two formats, chosen by the file name:

* ``NAME.safetensors`` + ``NAME.json`` (:data:`SAFETENSORS_SUFFIX`): the weights as safetensors (no pickle
  at all: a header of tensor names, dtypes and shapes, then raw bytes) and the spec and info as JSON beside
  them. The pipeline writes the built-in policies this way (``policy.safetensors``, and every
  ``--snapshot-interval`` iterations ``snapshots/iter_NNNN.safetensors``); ``libero-tgrpo eval`` reads them.
* ``NAME.pt``: the same payload through ``torch.save``, read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import tgrpo
from libero_tgrpo.files import json_default, write_bytes, write_json
from libero_tgrpo.versions import now, versions
from tgrpo.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "POLICY_KINDS",
    "PolicyFileError",
    "obs_mode_for",
    "build_policy",
    "save_policy",
    "load_policy",
    "DEFAULT_STATE_HIDDEN",
    "SAFETENSORS_SUFFIX",
]

POLICY_KINDS = ("state", "vision")
"""Built-in policy kinds; any other value of ``--policy`` is a Hugging Face model path or Hub id."""

DEFAULT_STATE_HIDDEN = (64, 64)
"""Hidden layer widths of the built-in state policy."""

POLICY_FILE_VERSION = 1
"""Version of the policy file layout (``.pt`` payload; ``.json`` beside a ``.safetensors``)."""

SAFETENSORS_SUFFIX = ".safetensors"
"""A policy path ending so is written and read as safetensors weights + a JSON file of the same stem."""

_SAFETENSORS_FORMAT = "libero_tgrpo.policy"


class PolicyFileError(ValueError):
    """A policy file that is missing or was not written by :func:`save_policy`."""


def obs_mode_for(kind: str) -> str:
    """Observation mode of the env a policy kind reads."""
    if kind == "state":
        return "state"
    if kind == "vision":
        return "rgb_state"
    return "rgb"


def build_policy(
    kind: str,
    observation_space: Any,
    *,
    seed: int = 0,
    hidden: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> tuple[Any, dict[str, Any]]:
    """A fresh policy of ``kind`` for a single-env observation space, and its spec.

    Args:
        kind: ``"state"``, ``"vision"``, or a Hugging Face model directory / Hub id.
        observation_space: ``envs.single_observation_space`` (a Dict space of ``libero_gym``); not used (may be
            None) for a Hugging Face model.
        seed: weight initialisation seed.
        hidden: hidden layer widths (state and vision policies).
        **kwargs: other constructor arguments of the policy class; for a Hugging Face model the keyword
            arguments of ``HFVLAPolicy.from_pretrained`` as plain data (``device``, ``dtype``,
            ``trust_remote_code``, ``unnorm_key``, ``lora_r``, ``lora_alpha``, ``gradient_checkpointing``,
            ``micro_batch_size``, ``recompute_old_log_probs``, ``static_cache``, ``compile_decoding``,
            ``compile_prefill``, ``merged_sampling``;
            ``PipelineConfig.policy_kwargs()``).

    Raises:
        ValueError: (``HFLoadError``) a Hugging Face model that cannot be loaded, in one line naming the path.

    Returns:
        ``(policy, spec)``; the spec rebuilds the policy in :func:`load_policy`.
    """
    if kind == "state":
        h = tuple(hidden) if hidden is not None else DEFAULT_STATE_HIDDEN
        policy = tgrpo.MLPTokenPolicy.from_space(observation_space, hidden=h, seed=seed, **kwargs)
        spec = {"kind": "state", "obs_dim": policy.obs_dim, "obs_keys": list(policy.obs_keys or ()),
                "hidden": list(h), **kwargs}
        return policy, spec
    if kind == "vision":
        from tgrpo.policies import VisionLanguageTokenPolicy

        if hidden is not None:
            kwargs["hidden"] = tuple(hidden)
        policy = VisionLanguageTokenPolicy.from_space(observation_space, seed=seed, **kwargs)
        spec = {"kind": "vision", "cameras": list(policy.cameras), "state_dim": policy.state_dim,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
        return policy, spec
    return _build_hf(str(kind), kwargs), {"kind": "hf", "path": str(kind), **kwargs}


def _build_hf(path: str, kwargs: dict[str, Any]) -> Any:
    """``HFVLAPolicy.from_pretrained`` from plain-data options (``lora_r``/``lora_alpha`` become the LoRA
    settings), so that the spec of a policy file holds no objects."""
    from tgrpo.policies import HFVLAPolicy, LoRASettings

    args = dict(kwargs)
    lora = {k: args.pop(f"lora_{k}") for k in ("r", "alpha") if f"lora_{k}" in args}
    if lora:
        args["lora"] = LoRASettings(**lora)
    return HFVLAPolicy.from_pretrained(path, **args)


def _rebuild(spec: dict[str, Any]) -> Any:
    kind = spec.get("kind")
    args = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "state":
        return tgrpo.MLPTokenPolicy(
            int(args.pop("obs_dim")),
            hidden=tuple(args.pop("hidden")),
            obs_keys=tuple(args.pop("obs_keys")) or None,
            seed=None,
            **args,
        )
    if kind == "vision":
        from tgrpo.policies import VisionLanguageTokenPolicy

        for key in ("cameras", "channels", "hidden"):
            if key in args:
                args[key] = tuple(args[key])
        return VisionLanguageTokenPolicy(seed=None, **args)
    if kind == "hf":
        return _build_hf(args.pop("path"), args)
    raise PolicyFileError(f"policy spec has kind={kind!r}; accepted kinds are 'state', 'vision' and 'hf'.")


def _save_safetensors(payload: dict[str, Any], path: Path) -> Path:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in payload["state_dict"].items()}
    config = {k: v for k, v in payload.items() if k != "state_dict"}
    config = json.loads(json.dumps(config, default=json_default))  # plain data only, as in the .pt payload
    data = save(state, metadata={"format": _SAFETENSORS_FORMAT, "format_version": str(POLICY_FILE_VERSION)})
    write_json(path.with_suffix(".json"), config)
    return write_bytes(path, data)


def _load_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config_path = path.with_suffix(".json")
    if not config_path.is_file():
        raise PolicyFileError(
            f"{str(config_path)!r} (the policy's spec, written beside {path.name}) is missing; a .safetensors file "
            "holds only weights."
        )
    try:
        config = json.loads(config_path.read_text())
        state = load_file(str(path), device="cpu")
    except (OSError, ValueError, SafetensorError) as e:
        raise PolicyFileError(f"{str(path)!r} with {config_path.name} is not a readable policy: {e}") from e
    if not isinstance(config, dict) or "spec" not in config:
        raise PolicyFileError(f"{str(config_path)!r} is not a policy config written by libero_tgrpo (no 'spec').")
    return {**config, "state_dict": state}


def save_policy(policy: Any, spec: dict[str, Any], path: str | os.PathLike, **info: Any) -> Path:
    """Write a policy file atomically: safetensors + JSON for a ``.safetensors`` path, else ``torch.save``.

    Args:
        policy: the policy (``state_dict()`` is saved).
        spec: its spec from :func:`build_policy`.
        path: file to write; ``NAME.safetensors`` also writes ``NAME.json`` (spec and info).
        **info: recorded with it (task, obs_mode, stage, seeds, metrics, ...).

    Raises:
        TypeError: if ``spec`` or ``info`` hold objects other than plain data (they could not be loaded
            safely).
        OSError: ``ENOSPC`` when the disk is full; an earlier file at ``path`` is left intact.
    """
    payload = {
        "format_version": POLICY_FILE_VERSION,
        "spec": spec,
        "state_dict": policy.state_dict(),
        "info": {**info, "saved": now(), "versions": versions()},
    }
    if Path(path).suffix == SAFETENSORS_SUFFIX:
        return _save_safetensors(payload, Path(path))
    return save_checkpoint(path, payload)


def load_policy(path: str | os.PathLike) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Rebuild a policy from a file of :func:`save_policy`, or from a TGRPO ``checkpoint.pt`` beside one.

    Args:
        path: a ``policy.safetensors`` (with its ``policy.json``) or ``policy.pt`` of :func:`save_policy`; or a
            TGRPO run directory / its ``checkpoint.pt``, whose ``init_policy.pt`` (written by ``libero-tgrpo
            train``) gives the spec.

    Returns:
        ``(policy, spec, info)``.

    The file is read with ``torch.load(weights_only=True)`` (:func:`tgrpo.load_checkpoint`): a file that holds
    other Python objects than tensors and plain data is refused before anything in it runs.

    Raises:
        PolicyFileError: if the file does not exist, is not a policy file, or holds objects that could run
            code on load.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if path.suffix == ".json" and path.with_suffix(SAFETENSORS_SUFFIX).is_file():
        path = path.with_suffix(SAFETENSORS_SUFFIX)
    if path.suffix == SAFETENSORS_SUFFIX and path.is_file():
        payload = _load_safetensors(path)
        policy = _rebuild(payload["spec"])
        policy.load_state_dict(payload["state_dict"])
        return policy, payload["spec"], payload.get("info", {})
    if not path.is_file():
        raise PolicyFileError(
            f"policy file {str(path)!r} does not exist. Give a policy.safetensors or policy.pt written by "
            "`libero-tgrpo sft` or `libero-tgrpo train`, or a TGRPO run directory."
        )
    try:
        payload = load_checkpoint(path)
    except CheckpointError as e:  # UnsafeCheckpointError included: nothing in the file has run
        raise PolicyFileError(str(e)) from e
    if isinstance(payload, dict) and "spec" in payload and "state_dict" in payload:
        policy = _rebuild(payload["spec"])
        policy.load_state_dict(payload["state_dict"])
        return policy, payload["spec"], payload.get("info", {})
    if isinstance(payload, dict) and "policy" in payload and "iteration" in payload:
        init = path.parent / "init_policy.pt"
        if not init.is_file():
            raise PolicyFileError(
                f"{str(path)!r} is a TGRPO checkpoint, but {str(init)!r} (the policy spec) is missing beside it."
            )
        policy, spec, info = load_policy(init)
        policy.load_state_dict(payload["policy"])
        return policy, spec, {**info, "stage": "tgrpo", "iteration": int(payload["iteration"])}
    raise PolicyFileError(f"{str(path)!r} is not a policy file written by libero_tgrpo (no 'spec'/'state_dict').")
