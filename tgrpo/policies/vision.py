"""A small vision-language token-action policy that trains on a CPU.

:class:`VisionLanguageTokenPolicy` sees the camera images (``"agentview"`` and, optionally, ``"wrist"``),
reads the instruction, optionally takes the proprioceptive ``"state"`` vector, and emits ``action_dim`` (7)
action tokens of ``n_bins`` (256) bins, like OpenVLA but with a network of a few hundred thousand
parameters instead of seven billion. Plain torch only (no torchvision, no transformers).

Architecture (all sizes configurable)::

    images [B, H, W, 3] uint8 ─ resize to image_size (64) ─┐
                                                           ├─ ConvEncoder (4 stride-2 conv blocks, GroupNorm,
    instruction ─ hashed words + bigrams ─ EmbeddingBag ───┤  FiLM from the instruction) ─ Linear ─ 128 / camera
                                                           │
    state [B, S] (optional) ─ Linear ─ tanh ───────────────┴─ concat ─ MLP (256) ─ 7 ordinal 256-way heads

The instruction encoder uses the hashing trick: each lower-cased word and word bigram is hashed (CRC-32) into
one of ``text_buckets`` rows of an ``nn.EmbeddingBag`` (mean). It needs no vocabulary, accepts any
instruction and keeps checkpoints self-contained. The heads are those of
:class:`tgrpo.policy.MLPTokenPolicy`: per-bin free logits plus an ordinal (discretised-Gaussian) part.
"""

from __future__ import annotations

import copy
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tgrpo.policies.common import check_instructions, check_tokens, sample_from_logits, token_stats
from tgrpo.policy import ORDINAL_SCALE, Observation
from tgrpo.tokenizer import ACTION_DIM, N_BINS, ActionTokenizer, resolve_tokenizer

#: Learning rate that works for ``VisionLanguageTokenPolicy`` with AdamW (used when ``TGRPOConfig.lr`` is None).
VISION_RECOMMENDED_LR = 1e-3
#: Rows per forward when no gradient is needed (sampling, reference log-probs of a whole group).
NO_GRAD_CHUNK = 128
#: Camera keys the policy looks for in a Dict observation space, in order.
CAMERA_KEYS = ("agentview", "wrist")
_WORD = re.compile(r"[a-z0-9]+")


def hash_instruction(text: str, buckets: int) -> list[int]:
    """Bucket ids of the words and word bigrams of an instruction (lower-cased; the hashing trick).

    Args:
        text: the instruction.
        buckets: number of hash buckets.

    Returns:
        a non-empty list of ids in ``0 .. buckets - 1`` (an empty instruction gives the id of ``""``).

    Example:
        >>> hash_instruction("Pick up the ketchup", 4096) == hash_instruction("pick up the  ketchup!", 4096)
        True
    """
    words = _WORD.findall(text.lower())
    feats = words + [f"{a} {b}" for a, b in zip(words[:-1], words[1:])]
    return [zlib.crc32(f.encode()) % buckets for f in feats] or [zlib.crc32(b"") % buckets]


class ConvEncoder(nn.Module):
    """Stride-2 conv blocks (conv, GroupNorm, FiLM, ReLU) and a linear projection.

    Args:
        image_size: side S of the (square) input images.
        channels: output channels of each block; each block halves the resolution.
        out_dim: size of the output feature.
        cond_dim: size of the FiLM conditioning vector.
    """

    def __init__(self, image_size: int, channels: Sequence[int], out_dim: int, cond_dim: int) -> None:
        super().__init__()
        convs, norms = [], []
        c_in, side = 3, image_size
        for i, c in enumerate(channels):
            k = 5 if i == 0 else 3
            convs.append(nn.Conv2d(c_in, c, k, stride=2, padding=k // 2))
            norms.append(nn.GroupNorm(min(8, c), c))
            c_in, side = c, (side + 1) // 2
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.channels = tuple(int(c) for c in channels)
        # FiLM: gamma = 1 + dg, beta; zero-initialised so the instruction starts as a no-op.
        self.film = nn.Linear(cond_dim, 2 * sum(self.channels))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.proj = nn.Linear(c_in * side * side, out_dim)

    def forward(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            images: [N, 3, S, S] float in [-1, 1].
            cond: [N, cond_dim] conditioning vectors (one per image).

        Returns:
            [N, out_dim] features.
        """
        film = self.film(cond).split([2 * c for c in self.channels], dim=-1)
        x = images
        for conv, norm, fb in zip(self.convs, self.norms, film):
            dg, beta = fb.unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            x = F.relu(norm(conv(x)) * (1.0 + dg) + beta)
        return F.relu(self.proj(x.flatten(1)))


class _VisionLanguageNet(nn.Module):
    """The network of :class:`VisionLanguageTokenPolicy`: encoders, fusion MLP and token heads."""

    def __init__(
        self,
        n_cameras: int,
        state_dim: int,
        image_size: int,
        channels: Sequence[int],
        image_feature_dim: int,
        text_dim: int,
        text_buckets: int,
        state_feature_dim: int,
        hidden: Sequence[int],
        head_dim: int,
    ) -> None:
        super().__init__()
        self.text = nn.EmbeddingBag(text_buckets, text_dim, mode="mean")
        nn.init.normal_(self.text.weight, std=1.0)
        self.image = ConvEncoder(image_size, channels, image_feature_dim, text_dim)
        self.state = nn.Linear(state_dim, state_feature_dim) if state_dim else None
        width = n_cameras * image_feature_dim + text_dim + (state_feature_dim if state_dim else 0)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        head = nn.Linear(width, head_dim)
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        self.mlp = nn.Sequential(*layers, head)

    def forward(
        self,
        images: torch.Tensor,
        text_ids: torch.Tensor,
        text_offsets: torch.Tensor,
        state: torch.Tensor | None,
    ) -> torch.Tensor:
        """[B, C, 3, S, S] images, flat text ids + offsets (B bags), [B, F] state -> [B, head_dim]."""
        b, n_cam = images.shape[:2]
        txt = self.text(text_ids, text_offsets)  # [B, text_dim]
        cond = txt.repeat_interleave(n_cam, dim=0)
        feats = self.image(images.flatten(0, 1), cond).view(b, -1)
        parts = [feats, txt]
        if self.state is not None and state is not None:
            parts.append(torch.tanh(self.state(state)))
        return self.mlp(torch.cat(parts, dim=1))


class VisionLanguageTokenPolicy(nn.Module):
    """A CPU-sized vision-language token-action policy (images + instruction [+ state] -> 7 tokens).

    Implements :class:`tgrpo.policy.TokenActionPolicy`. Tokens of one action are conditionally independent
    given the observation (one 256-way head per dimension, as in :class:`~tgrpo.policy.MLPTokenPolicy`); the
    reference policy for the KL term is a frozen copy of the initial network, kept in the module so
    checkpoints carry it.

    Args:
        cameras: observation keys of the images to use, each a [B, H, W, 3] uint8 array (or float in [0, 1]).
        state_dim: size of the ``state_key`` vector to use; 0 ignores the state (vision and language only).
        image_size: images are resized (bilinear, antialiased) to ``image_size`` x ``image_size`` inside
            the policy; any input size and aspect ratio is accepted.
        channels: output channels of the conv blocks (each halves the resolution).
        image_feature_dim: feature size per camera.
        text_dim: instruction embedding size (also the FiLM conditioning size).
        text_buckets: hash buckets of the instruction encoder.
        state_feature_dim: size of the projected state.
        hidden: widths of the fusion MLP.
        action_dim: tokens per action (7).
        n_bins: tokens per dimension (256).
        tokenizer: maps tokens to actions; default OpenVLA's convention over [-1, 1].
        state_key: observation key of the state vector.
        seed: seed of the weight initialisation (None: use the global torch RNG).
        ordinal_scale: weight of the ordinal part of the logits (0 turns it off).

    Raises:
        ValueError: on an empty camera list, ``image_size < 16``, or a tokenizer whose ``n_bins`` differs.

    Example:
        >>> policy = VisionLanguageTokenPolicy.from_space(envs.single_observation_space)  # doctest: +SKIP
        >>> tokens, logp = policy.sample(obs, ["pick up the bbq sauce and place it in the basket"] * 8)  # doctest: +SKIP
    """

    recommended_lr: float = VISION_RECOMMENDED_LR

    def __init__(
        self,
        cameras: Sequence[str] = CAMERA_KEYS,
        state_dim: int = 0,
        image_size: int = 64,
        channels: Sequence[int] = (16, 32, 64, 64),
        image_feature_dim: int = 128,
        text_dim: int = 64,
        text_buckets: int = 4096,
        state_feature_dim: int = 64,
        hidden: Sequence[int] = (256,),
        action_dim: int = ACTION_DIM,
        n_bins: int = N_BINS,
        tokenizer: ActionTokenizer | None = None,
        state_key: str = "state",
        seed: int | None = 0,
        ordinal_scale: float = ORDINAL_SCALE,
    ) -> None:
        super().__init__()
        if isinstance(cameras, str) or not cameras:
            raise ValueError(
                f"cameras={cameras!r} must be a non-empty list of image keys, e.g. {CAMERA_KEYS}."
            )
        if image_size < 16:
            raise ValueError(f"image_size={image_size} must be at least 16 pixels (64 to 96 recommended).")
        if state_dim < 0:
            raise ValueError(f"state_dim={state_dim} must be >= 0 (0 ignores the state).")
        self.cameras = tuple(cameras)
        self.state_dim = int(state_dim)
        self.state_key = state_key
        self.image_size = int(image_size)
        self.text_buckets = int(text_buckets)
        self.action_dim = int(action_dim)
        self.n_bins = int(n_bins)
        self.tokenizer = resolve_tokenizer(tokenizer, self.n_bins)
        self.ordinal_scale = float(ordinal_scale)
        extra = 2 if self.ordinal_scale > 0 else 0
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        self.net = _VisionLanguageNet(
            n_cameras=len(self.cameras),
            state_dim=self.state_dim,
            image_size=self.image_size,
            channels=channels,
            image_feature_dim=image_feature_dim,
            text_dim=text_dim,
            text_buckets=self.text_buckets,
            state_feature_dim=state_feature_dim,
            hidden=hidden,
            head_dim=self.action_dim * (self.n_bins + extra),
        )
        if seed is not None:
            torch.random.set_rng_state(gen_state)
        self.ref = copy.deepcopy(self.net).requires_grad_(False)
        centres = torch.as_tensor(self.tokenizer.decode(np.arange(self.n_bins)), dtype=torch.float32)
        self.register_buffer("_centres", centres, persistent=False)
        self._text_cache: dict[str, list[int]] = {}

    @classmethod
    def from_space(
        cls,
        observation_space: Any,
        cameras: Sequence[str] | None = None,
        use_state: bool = True,
        **kwargs: Any,
    ) -> VisionLanguageTokenPolicy:
        """Build a policy for a single-env Dict observation space (``envs.single_observation_space``).

        Args:
            observation_space: a ``gymnasium.spaces.Dict`` with image Boxes [H, W, 3].
            cameras: image keys to use; default every key of :data:`CAMERA_KEYS` the space has.
            use_state: use the ``"state"`` Box when the space has one.
            **kwargs: other constructor arguments.

        Raises:
            ValueError: if the space is not a Dict, has none of the cameras, or a camera is not [H, W, 3].
        """
        from gymnasium import spaces

        if not isinstance(observation_space, spaces.Dict):
            raise ValueError(
                f"VisionLanguageTokenPolicy needs a Dict observation space with image keys {CAMERA_KEYS}, got "
                f"{observation_space}; make the env with obs_mode='rgb' or 'rgb_state'."
            )
        keys = tuple(observation_space.spaces)
        cams = tuple(cameras) if cameras is not None else tuple(k for k in CAMERA_KEYS if k in keys)
        missing = [c for c in cams if c not in keys]
        if not cams or missing:
            raise ValueError(
                f"camera keys {list(missing or CAMERA_KEYS)} not in the observation space (keys {list(keys)}); "
                "make the env with obs_mode='rgb' or 'rgb_state', or pass cameras=[...]."
            )
        for c in cams:
            shape = observation_space[c].shape
            if shape is None or len(shape) != 3 or shape[-1] != 3:
                raise ValueError(f"camera {c!r} has shape {shape}; an image of shape (H, W, 3) is accepted.")
        state_key = kwargs.get("state_key", "state")
        if use_state and state_key in keys and "state_dim" not in kwargs:
            kwargs["state_dim"] = int(np.prod(observation_space[state_key].shape))
        return cls(cameras=cams, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    # ---------------------------------------------------------------- inputs
    def _inputs(
        self, obs: Observation, instructions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Observation + instructions -> (images [B, C, 3, S, S], text ids, text offsets, state [B, F])."""
        if not isinstance(obs, Mapping):
            raise ValueError(
                f"VisionLanguageTokenPolicy needs dict observations with image keys {list(self.cameras)}, got "
                f"{type(obs).__name__} of shape {np.shape(obs)}."
            )
        missing = [k for k in self.cameras if k not in obs]
        if missing:
            raise ValueError(
                f"observation keys {missing} not found; the observation has {sorted(obs)}, the policy reads "
                f"cameras {list(self.cameras)}" + (f" and {self.state_key!r}." if self.state_dim else ".")
            )
        arrays = [np.asarray(obs[k]) for k in self.cameras]
        first = arrays[0]
        for k, a in zip(self.cameras, arrays):
            if a.ndim != 4 or a.shape[-1] != 3:
                raise ValueError(
                    f"obs[{k!r}] has shape {a.shape}; a batch of RGB images [B, H, W, 3] is accepted."
                )
            if a.shape != first.shape:
                raise ValueError(
                    f"obs[{k!r}] has shape {a.shape} but obs[{self.cameras[0]!r}] has {first.shape}; "
                    "all cameras must share one shape."
                )
        b = first.shape[0]
        dev = self.device
        x = torch.from_numpy(np.ascontiguousarray(np.stack(arrays, axis=1))).to(dev)  # [B, C, H, W, 3]
        x = x.permute(0, 1, 4, 2, 3).flatten(0, 1)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        images = (x * 2.0 - 1.0).view(b, len(self.cameras), 3, self.image_size, self.image_size)

        instr = check_instructions(instructions, b)
        ids, offsets = [], []
        for s in instr:
            if s not in self._text_cache:
                self._text_cache[s] = hash_instruction(s, self.text_buckets)
            offsets.append(len(ids))
            ids.extend(self._text_cache[s])
        text_ids = torch.as_tensor(ids, dtype=torch.long, device=dev)
        text_offsets = torch.as_tensor(offsets, dtype=torch.long, device=dev)

        state = None
        if self.state_dim:
            if self.state_key not in obs:
                raise ValueError(
                    f"observation key {self.state_key!r} not found (the observation has {sorted(obs)}); the "
                    f"policy was built with state_dim={self.state_dim}. Use obs_mode='rgb_state' or state_dim=0."
                )
            st = np.asarray(obs[self.state_key], dtype=np.float32).reshape(b, -1)
            if st.shape[1] != self.state_dim:
                raise ValueError(
                    f"obs[{self.state_key!r}] has {st.shape[1]} features per row; the policy expects "
                    f"state_dim={self.state_dim}."
                )
            state = torch.from_numpy(st).to(dev)
        return images, text_ids, text_offsets, state

    def logits(self, obs: Observation, instructions: Sequence[str], ref: bool = False) -> torch.Tensor:
        """Action-token logits [B, D, n_bins] of the live (or reference) network."""
        images, ids, offsets, state = self._inputs(obs, instructions)
        out = (self.ref if ref else self.net)(images, ids, offsets, state)
        b = out.shape[0]
        if self.ordinal_scale <= 0:
            return out.view(b, self.action_dim, self.n_bins)
        out = out.view(b, self.action_dim, self.n_bins + 2)
        free, a, q = out[..., : self.n_bins], out[..., -2:-1], out[..., -1:]
        c = self._centres
        return free + self.ordinal_scale * (a * c + q * c * c)

    def _logits_no_grad(
        self, obs: Observation, instructions: Sequence[str], ref: bool = False
    ) -> torch.Tensor:
        """:meth:`logits` in chunks of ``NO_GRAD_CHUNK`` rows (large batches, e.g. a whole group's reference)."""
        if not isinstance(obs, Mapping):
            return self.logits(obs, instructions, ref)
        b = len(np.asarray(obs[self.cameras[0]])) if self.cameras[0] in obs else 0
        if b <= NO_GRAD_CHUNK:
            return self.logits(obs, instructions, ref)
        instr = check_instructions(instructions, b)
        return torch.cat(
            [
                self.logits(
                    {k: v[s : s + NO_GRAD_CHUNK] for k, v in obs.items()}, instr[s : s + NO_GRAD_CHUNK], ref
                )
                for s in range(0, b, NO_GRAD_CHUNK)
            ]
        )

    # ---------------------------------------------------------------- protocol
    def sample(
        self, obs: Observation, instructions: Sequence[str], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample tokens [B, 7] and their log-probs [B, 7] (no grad); ``temperature=0`` is greedy."""
        with torch.no_grad():
            return sample_from_logits(self._logits_no_grad(obs, instructions), temperature)

    def log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable log-probs [B, 7] and entropies [B, 7] of ``tokens`` [B, 7]."""
        logits = self.logits(obs, instructions)
        tokens = check_tokens(tokens, logits.shape[0], self.action_dim, self.n_bins).to(logits.device)
        return token_stats(logits, tokens, temperature)

    def ref_log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Log-probs [B, 7] of ``tokens`` under the frozen initial network (no grad)."""
        with torch.no_grad():
            logits = self._logits_no_grad(obs, instructions, ref=True)
            tokens = check_tokens(tokens, logits.shape[0], self.action_dim, self.n_bins).to(logits.device)
            return token_stats(logits, tokens, temperature)[0]

    def tokens_to_actions(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """Tokens [B, 7] -> actions [B, 7] float32 in [-1, 1] (bin centres)."""
        return self.tokenizer.decode(tokens)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The live network's parameters (the reference copy is frozen)."""
        return list(self.net.parameters())
