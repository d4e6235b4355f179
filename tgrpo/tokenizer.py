"""Discretisation of continuous actions into action tokens (OpenVLA convention).

Each of the ``action_dim`` (7) action dimensions is discretised into one token out of ``n_bins`` (256).
Two index spaces are used:

* the **action token** ``k`` in ``0 .. n_bins - 1``, what TGRPO policies sample and what the loss sees;
* the **LLM vocabulary id**, for language-model policies whose action tokens are the last ``n_bins`` ids
  of a vocabulary of size ``V``: ``id = V - 1 - k``, so ``k = 0`` is id ``V - 1`` (OpenVLA's order).

Bin conventions (``convention=``):

``"openvla"`` (default, matches pretrained OpenVLA checkpoints):
    ``edges = linspace(low, high, n_bins)`` (256 edges), ``centres = (edges[:-1] + edges[1:]) / 2``
    (255 centres). Encoding: ``k = digitize(clip(a), edges) - 1`` in ``0 .. 255``; only ``a == high``
    gives ``k = 255``. Decoding: ``a = centres[min(k, 254)]``, so tokens 254 and 255 decode to the same
    action. Bin width ``(high - low) / 255``. This is exactly OpenVLA's ``ActionTokenizer``
    (``token_id = vocab_size - digitize(a)``).
``"uniform"``:
    256 bins of equal width ``w = (high - low) / 256``; ``k = floor((a - low) / w)`` clipped to
    ``0 .. 255``; centre ``low + (k + 0.5) * w``. Every token decodes to a distinct action.

In both conventions ``decode(encode(a))`` is within half a bin width of ``clip(a)`` and
``encode(decode(k)) == k`` for every token that has its own centre.

Example:
    >>> tok = ActionTokenizer()
    >>> tok.encode(np.array([-1.0, 0.0, 1.0]))
    array([  0, 127, 255])
    >>> tok.decode(np.array([0, 127, 255])).round(4)
    array([-0.9961,  0.    ,  0.9961], dtype=float32)
"""

from __future__ import annotations

import numpy as np
import torch

#: Number of bins per action dimension in OpenVLA.
N_BINS = 256
#: Action dimensions of a LIBERO / OpenVLA action (xyz, rpy, gripper).
ACTION_DIM = 7

CONVENTIONS = ("openvla", "uniform")


class ActionTokenizer:
    """Maps continuous actions in ``[low, high]`` to action tokens and back.

    Args:
        n_bins: number of tokens per dimension (256 in OpenVLA).
        low: lower action bound (-1).
        high: upper action bound (+1).
        convention: ``"openvla"`` (255 usable centres, OpenVLA-compatible) or ``"uniform"`` (256 equal bins).
    """

    def __init__(
        self, n_bins: int = N_BINS, low: float = -1.0, high: float = 1.0, convention: str = "openvla"
    ) -> None:
        if convention not in CONVENTIONS:
            raise ValueError(f"convention={convention!r} is not known; use one of {CONVENTIONS}.")
        if n_bins < 2:
            raise ValueError(f"n_bins={n_bins} must be at least 2 (OpenVLA uses 256).")
        if not high > low:
            raise ValueError(f"high={high} must be greater than low={low}.")
        self.n_bins = int(n_bins)
        self.low = float(low)
        self.high = float(high)
        self.convention = convention
        if convention == "openvla":
            self.edges = np.linspace(low, high, n_bins)
            self.centres = ((self.edges[:-1] + self.edges[1:]) / 2.0).astype(np.float32)
        else:
            width = (high - low) / n_bins
            self.edges = low + width * np.arange(n_bins + 1)
            self.centres = (low + (np.arange(n_bins) + 0.5) * width).astype(np.float32)

    @property
    def bin_width(self) -> float:
        """Width of one bin in action units."""
        return float(self.edges[1] - self.edges[0])

    def encode(self, actions: np.ndarray) -> np.ndarray:
        """Continuous actions -> action tokens.

        Args:
            actions: [..., D] floats; values outside ``[low, high]`` are clipped.

        Returns:
            [..., D] int64 tokens in ``0 .. n_bins - 1``.
        """
        a = np.clip(np.asarray(actions, dtype=np.float64), self.low, self.high)
        if np.isnan(a).any():
            raise ValueError("actions contain NaN; they cannot be tokenised.")
        if self.convention == "openvla":
            k = np.digitize(a, self.edges) - 1
        else:
            k = np.floor((a - self.low) / self.bin_width)
        return np.clip(k, 0, self.n_bins - 1).astype(np.int64)

    def decode(self, tokens: np.ndarray | torch.Tensor) -> np.ndarray:
        """Action tokens -> continuous actions at the bin centres.

        Args:
            tokens: [..., D] integers in ``0 .. n_bins - 1`` (NumPy array or tensor).

        Returns:
            [..., D] float32 actions in ``[low, high]``.

        Raises:
            ValueError: if a token is outside ``0 .. n_bins - 1``.
        """
        k = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if k.size and (k.min() < 0 or k.max() >= self.n_bins):
            raise ValueError(
                f"action tokens must lie in 0..{self.n_bins - 1}, got values in {k.min()}..{k.max()}."
            )
        return self.centres[np.clip(k, 0, len(self.centres) - 1)]

    def to_vocab_ids(self, tokens: np.ndarray | torch.Tensor, vocab_size: int) -> np.ndarray | torch.Tensor:
        """Action tokens -> LLM vocabulary ids (the last ``n_bins`` ids of a vocabulary of ``vocab_size``).

        Args:
            tokens: [...] action tokens in ``0 .. n_bins - 1``.
            vocab_size: size V of the tokenizer vocabulary (OpenVLA: the Llama-2 tokenizer's 32000).

        Returns:
            [...] ids ``V - 1 - k``, same array type as ``tokens``.
        """
        if vocab_size < self.n_bins:
            raise ValueError(f"vocab_size={vocab_size} is smaller than n_bins={self.n_bins}.")
        return vocab_size - 1 - tokens

    def from_vocab_ids(self, ids: np.ndarray | torch.Tensor, vocab_size: int) -> np.ndarray | torch.Tensor:
        """LLM vocabulary ids -> action tokens (inverse of :meth:`to_vocab_ids`).

        Args:
            ids: [...] ids in ``V - n_bins .. V - 1``.
            vocab_size: size V of the tokenizer vocabulary.

        Returns:
            [...] action tokens ``V - 1 - id`` in ``0 .. n_bins - 1``.

        Raises:
            ValueError: if an id is not one of the last ``n_bins`` ids.
        """
        k = vocab_size - 1 - ids
        size = k.numel() if isinstance(k, torch.Tensor) else np.size(k)
        if size and (int(k.min()) < 0 or int(k.max()) >= self.n_bins):
            raise ValueError(
                f"ids must be action ids in {vocab_size - self.n_bins}..{vocab_size - 1} "
                f"(the last {self.n_bins} of a vocabulary of {vocab_size})."
            )
        return k

    def vocab_slice(self, vocab_size: int) -> slice:
        """Slice of the logits' last axis holding the action ids, ``[V - n_bins, V)``.

        Note the order: position ``j`` of the slice is id ``V - n_bins + j``, i.e. action token
        ``n_bins - 1 - j``; flip the sliced logits to index them by action token.
        """
        return slice(vocab_size - self.n_bins, vocab_size)


def resolve_tokenizer(tokenizer: ActionTokenizer | None, n_bins: int) -> ActionTokenizer:
    """The policy's tokenizer: ``tokenizer`` if given (it must have ``n_bins`` bins), else OpenVLA's default.

    Raises:
        ValueError: if ``tokenizer.n_bins`` differs from ``n_bins``.
    """
    tokenizer = tokenizer or ActionTokenizer(n_bins=n_bins)
    if tokenizer.n_bins != n_bins:
        raise ValueError(
            f"tokenizer has n_bins={tokenizer.n_bins} but the policy has n_bins={n_bins}; they must match."
        )
    return tokenizer
