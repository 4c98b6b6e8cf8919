"""Gaussian noise for the clipped sum: N(0, σ²C²) per coordinate, once per logical step.

Outside secure mode the generator is seeded once (from ``seed`` or the OS) and its state is
checkpointed, so a resumed run replays the same noise — reproducible, fine for experiments, but an
attacker who learns the seed can subtract the noise. Secure mode reseeds from the OS CSPRNG for
every step and keeps no replayable state.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["NoiseSource"]


def _os_seed() -> int:
    return int.from_bytes(os.urandom(8), "little") >> 1


class NoiseSource:
    """Draws the per-step Gaussian noise.

    Args:
        device: where the parameters (and so the noise) live.
        secure_mode: reseed from ``os.urandom`` for every draw.
        seed: seed of the replayable generator (ignored in secure mode); None = from the OS.
    """

    def __init__(self, *, device: torch.device, secure_mode: bool, seed: int | None) -> None:
        self.device = device
        self.secure_mode = secure_mode
        self.generator = torch.Generator(device=device).manual_seed(
            _os_seed() if seed is None else seed
        )

    def _generator(self) -> torch.Generator:
        if self.secure_mode:
            return torch.Generator(device=self.device).manual_seed(_os_seed())
        return self.generator

    def gaussian(self, like: Tensor, *, std: float) -> Tensor:
        """fp32 (or fp64, following ``like``) N(0, std²) noise with ``like``'s shape."""
        dtype = like.dtype if like.dtype == torch.float64 else torch.float32
        noise = torch.empty(like.shape, dtype=dtype, device=self.device)
        return noise.normal_(0.0, std, generator=self._generator())

    def state_dict(self) -> dict[str, Any]:
        """The replayable generator's state."""
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.generator.set_state(state["generator"])
