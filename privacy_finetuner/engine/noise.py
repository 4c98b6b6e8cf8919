"""Gaussian noise for the clipped sum: N(0, σ²C²) per coordinate, once per logical step.

Secure mode (the default) keeps no replayable state: every draw sums :data:`SECURE_STREAMS`
independent Gaussians of variance σ²C²/k, each from a torch generator freshly seeded with 64 bits
of ``os.urandom``. The sum is exactly N(0, σ²C²) in real arithmetic, and recovering it needs all
k seeds: 192 bits of OS entropy per draw, so even a meet-in-the-middle search over the seeds
costs 2¹²⁸ work (a single 64-bit-seeded generator could be brute-forced). A resumed run therefore
draws fresh noise. Outside secure mode one generator is seeded from ``seed`` and checkpointed, so
a replay reproduces the noise exactly: fine for tests, no guarantee at all.

What floating-point sampling does *not* protect against: the Gaussian is sampled in fp32 (or
fp64), so its values lie on a non-uniform grid and its far tails are truncated; Mironov (2012)
showed that such artefacts can leak for the Laplace mechanism. A discrete Gaussian sampler
(Canonne, Kamath & Steinke 2020) over a fixed grid, with the clipped sum quantised to that grid,
would close that gap; this engine does not implement one.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import Tensor

__all__ = ["SECURE_STREAMS", "NoiseSource", "os_seed"]

#: Independent OS-seeded generators summed per secure draw (64 bits of seed each).
SECURE_STREAMS = 3


def os_seed() -> int:
    """A 63-bit seed from the OS CSPRNG (``torch.Generator.manual_seed`` takes at most 64)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


class NoiseSource:
    """Draws the per-step Gaussian noise.

    Args:
        device: where the parameters (and so the noise) live.
        secure_mode: fresh OS entropy for every draw, no state (see module docstring).
        seed: seed of the replayable generator used outside secure mode; None = from the OS.
    """

    def __init__(self, *, device: torch.device, secure_mode: bool, seed: int | None) -> None:
        self.device = device
        self.secure_mode = secure_mode
        self.generator = torch.Generator(device=device).manual_seed(
            os_seed() if seed is None or secure_mode else seed
        )

    def gaussian(self, like: Tensor, *, std: float) -> Tensor:
        """fp32 (or fp64, following ``like``) N(0, std²) noise with ``like``'s shape."""
        dtype = like.dtype if like.dtype == torch.float64 else torch.float32
        noise = torch.empty(like.shape, dtype=dtype, device=self.device)
        if not self.secure_mode:
            return noise.normal_(0.0, std, generator=self.generator)
        part_std = std / math.sqrt(SECURE_STREAMS)
        part = torch.empty_like(noise)
        noise.normal_(0.0, part_std, generator=self._fresh())
        for _ in range(SECURE_STREAMS - 1):
            noise.add_(part.normal_(0.0, part_std, generator=self._fresh()))
        return noise

    def _fresh(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(os_seed())

    def state_dict(self) -> dict[str, Any] | None:
        """The replayable generator's state; None in secure mode (nothing may be replayed)."""
        if self.secure_mode:
            return None
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`; a secure source ignores it and stays fresh."""
        if self.secure_mode or state is None:
            return
        self.generator.set_state(state["generator"])
