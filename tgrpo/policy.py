"""The token-action policy protocol and a small built-in policy.

TGRPO talks to a policy only through :class:`TokenActionPolicy`: five methods, in the spirit of
Stable-Baselines3's ``forward`` / ``evaluate_actions``. A policy emits, for each observation, ``action_dim``
(7) action tokens in ``0 .. n_bins - 1`` (256 bins, OpenVLA's convention, see
:class:`tgrpo.tokenizer.ActionTokenizer`). Observations are whatever the vector env returns: a batched
NumPy array (Box spaces) or a dict of batched arrays (Dict spaces, e.g. ``{"state": [B, D]}`` or camera
images). Instructions are a list of B strings.

:class:`MLPTokenPolicy` is a small state-based implementation that trains in seconds on a CPU; the
vision-language and OpenVLA adapters implement the same protocol.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from tgrpo.tokenizer import ACTION_DIM, N_BINS, ActionTokenizer, resolve_tokenizer

Observation = np.ndarray | Mapping[str, np.ndarray]

#: Learning rate that works for ``MLPTokenPolicy`` with AdamW (used when ``TGRPOConfig.lr`` is None).
MLP_RECOMMENDED_LR = 1e-2
#: Default weight of the ordinal (discretised-Gaussian) part of ``MLPTokenPolicy``'s logits.
ORDINAL_SCALE = 10.0


@runtime_checkable
class TokenActionPolicy(Protocol):
    """What TGRPO needs from a policy that emits action tokens.

    Shapes: B = batch of observations, D = ``action_dim`` (7), tokens index the ``n_bins`` (256) action
    bins. Log-probabilities are per token, natural log, of the distribution *at the given temperature*
    (``softmax(logits / temperature)``), so that sampling-time and update-time log-probs are comparable.
    Temperature 0 means greedy decoding (log-probs of the argmax tokens are then reported as 0).
    """

    action_dim: int
    n_bins: int

    def sample(
        self, obs: Observation, instructions: Sequence[str], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample action tokens without gradient.

        Args:
            obs: batched observations (array [B, ...] or dict of arrays [B, ...]).
            instructions: B language instructions.
            temperature: sampling temperature; 0 for greedy.

        Returns:
            tokens [B, D] int64 in ``0 .. n_bins - 1`` and their log-probs [B, D] float (no grad).
        """
        ...

    def log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable log-probs and entropies of given tokens.

        Args:
            obs: batched observations.
            instructions: B language instructions.
            tokens: [B, D] int64 action tokens.
            temperature: the temperature the tokens were sampled at.

        Returns:
            log-probs [B, D] (with grad) and per-token entropies [B, D] of the policy distribution.
        """
        ...

    def ref_log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Log-probs [B, D] of ``tokens`` under the frozen reference policy (no grad), for the KL term.

        For a LoRA model this is the same model with the adapter disabled.
        """
        ...

    def tokens_to_actions(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """Map tokens [B, D] to continuous actions [B, D] float32 in [-1, 1] for ``env.step``."""
        ...

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the optimizer updates (e.g. only the LoRA weights)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to restore the policy from a checkpoint (``torch.nn.Module`` provides it)."""
        ...

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any:
        """Restore from :meth:`state_dict`."""
        ...


def flatten_observation(obs: Observation, keys: Sequence[str] | None = None) -> np.ndarray:
    """Turn a batched observation into a [B, F] float32 array.

    Args:
        obs: a [B, ...] array, or a dict of [B, ...] arrays.
        keys: for dict observations, the keys to concatenate, in order (default: every key, sorted).

    Returns:
        [B, F] float32: each entry flattened after the batch axis and concatenated.

    Raises:
        ValueError: if a requested key is missing.
    """
    if isinstance(obs, Mapping):
        names = sorted(obs) if keys is None else list(keys)
        missing = [k for k in names if k not in obs]
        if missing:
            raise ValueError(f"observation keys {missing} not found; the observation has {sorted(obs)}.")
        parts = [np.asarray(obs[k]) for k in names]
        b = parts[0].shape[0]
        return np.concatenate([p.reshape(b, -1).astype(np.float32) for p in parts], axis=1)
    arr = np.asarray(obs)
    if arr.ndim == 1:
        arr = arr[None]
    return arr.reshape(arr.shape[0], -1).astype(np.float32)


def dist_stats(logits: torch.Tensor, tokens: torch.Tensor | None, temperature: float):
    """Per-token log-probs and entropies of ``tokens`` under ``softmax(logits / temperature)``."""
    logp_all = torch.log_softmax(logits / max(temperature, 1e-6), dim=-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    lp = None if tokens is None else logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return lp, ent, logp_all


class MLPTokenPolicy(nn.Module):
    """A small state-based token-action policy: an MLP with ``action_dim`` independent 256-way heads.

    The tokens of one action are conditionally independent given the observation (an autoregressive VLA
    conditions each token on the previous ones; the protocol allows both). Instructions are accepted and
    ignored: the built-in policy serves one task. The reference policy for the KL term is a frozen copy of
    the initial network, kept inside the module so checkpoints carry it.

    Args:
        obs_dim: size F of the flattened observation.
        hidden: widths of the hidden layers.
        action_dim: tokens per action (7).
        n_bins: tokens per dimension (256).
        obs_keys: for dict observations, keys to concatenate (default: ``("state",)`` when present,
            otherwise every key).
        tokenizer: maps tokens to actions; default OpenVLA's convention over [-1, 1].
        seed: seed of the weight initialisation (None: use the global torch RNG).
        ordinal_scale: weight of the ordinal part of the logits (0 turns it off, leaving 256 free logits).

    Logits of dimension j: ``free_j[k] + ordinal_scale * (a_j * c_k + b_j * c_k**2)``, where ``c_k`` is the
    action value of bin k and ``free_j``, ``a_j``, ``b_j`` are outputs of the network. The quadratic term is a
    discretised-Gaussian component: credit for one bin spreads to its neighbours, which makes learning from a
    few hundred samples fast. All outputs start near 0, i.e. a near-uniform token distribution.
    """

    recommended_lr: float = MLP_RECOMMENDED_LR

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (64, 64),
        action_dim: int = ACTION_DIM,
        n_bins: int = N_BINS,
        obs_keys: Sequence[str] | None = None,
        tokenizer: ActionTokenizer | None = None,
        seed: int | None = 0,
        ordinal_scale: float = ORDINAL_SCALE,
    ) -> None:
        super().__init__()
        if obs_dim < 1:
            raise ValueError(
                f"obs_dim={obs_dim} must be a positive integer (the flattened observation size)."
            )
        self.obs_dim = int(obs_dim)
        self.action_dim = int(action_dim)
        self.n_bins = int(n_bins)
        self.obs_keys = None if obs_keys is None else tuple(obs_keys)
        self.tokenizer = resolve_tokenizer(tokenizer, self.n_bins)
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        layers: list[nn.Module] = []
        width = self.obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        self.ordinal_scale = float(ordinal_scale)
        extra = 2 if self.ordinal_scale > 0 else 0
        head = nn.Linear(width, self.action_dim * (self.n_bins + extra))
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        self.net = nn.Sequential(*layers, head)
        centres = torch.as_tensor(self.tokenizer.decode(np.arange(self.n_bins)), dtype=torch.float32)
        self.register_buffer("_centres", centres, persistent=False)
        if seed is not None:
            torch.random.set_rng_state(gen_state)
        self.ref = copy.deepcopy(self.net).requires_grad_(False)

    @classmethod
    def from_space(cls, observation_space: Any, **kwargs: Any) -> MLPTokenPolicy:
        """Build a policy for a single-env observation space (``envs.single_observation_space``).

        Box spaces use all entries; Dict spaces use ``"state"`` when present, else every Box key.
        """
        from gymnasium import spaces

        if isinstance(observation_space, spaces.Dict):
            keys = kwargs.pop("obs_keys", None)
            if keys is None:
                keys = ("state",) if "state" in observation_space.spaces else tuple(sorted(observation_space))
            dim = sum(int(np.prod(observation_space[k].shape)) for k in keys)
            return cls(dim, obs_keys=keys, **kwargs)
        if isinstance(observation_space, spaces.Box):
            return cls(int(np.prod(observation_space.shape)), **kwargs)
        raise ValueError(
            f"MLPTokenPolicy needs a Box or Dict observation space, got {observation_space}; "
            "write a policy implementing TokenActionPolicy for other spaces."
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _features(self, obs: Observation) -> torch.Tensor:
        keys = self.obs_keys
        if keys is None and isinstance(obs, Mapping) and "state" in obs:
            keys = ("state",)
        x = flatten_observation(obs, keys)
        if x.shape[1] != self.obs_dim:
            raise ValueError(
                f"observation has {x.shape[1]} features after flattening, the policy expects {self.obs_dim}; "
                "build it with MLPTokenPolicy.from_space(envs.single_observation_space)."
            )
        return torch.as_tensor(x, device=self.device)

    def logits(self, obs: Observation, ref: bool = False) -> torch.Tensor:
        """Action-token logits [B, D, n_bins] of the live (or reference) network."""
        x = self._features(obs)
        out = (self.ref if ref else self.net)(x)
        if self.ordinal_scale <= 0:
            return out.view(x.shape[0], self.action_dim, self.n_bins)
        out = out.view(x.shape[0], self.action_dim, self.n_bins + 2)
        free, a, b = out[..., : self.n_bins], out[..., -2:-1], out[..., -1:]
        c = self._centres
        return free + self.ordinal_scale * (a * c + b * c * c)

    def sample(
        self, obs: Observation, instructions: Sequence[str], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = self.logits(obs)
            if temperature <= 0:
                tokens = logits.argmax(-1)
                return tokens, torch.zeros(tokens.shape, dtype=logits.dtype, device=logits.device)
            _, _, logp_all = dist_stats(logits, None, temperature)
            b = logits.shape[0]
            tokens = torch.multinomial(logp_all.exp().view(-1, self.n_bins), 1).view(b, self.action_dim)
            return tokens, logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    def log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lp, ent, _ = dist_stats(self.logits(obs), tokens.to(self.device), temperature)
        return lp, ent

    def ref_log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        with torch.no_grad():
            lp, _, _ = dist_stats(self.logits(obs, ref=True), tokens.to(self.device), temperature)
        return lp

    def tokens_to_actions(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.tokenizer.decode(tokens)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())
