"""Gaussian noise for the clipped sum: N(0, σ²C²) per coordinate, once per logical step.

Secure mode (the default) keeps no replayable state: every draw comes from a torch generator whose
whole state is freshly filled from ``os.urandom``, so the noise of one step says nothing about the
next and a resumed run draws fresh noise. One Gaussian per coordinate is drawn where the generator
can hold at least 128 bits of OS entropy (two on CUDA, see below):

* CPU (MT19937): all 624 state words come from the OS (19 937 effective bits); the layout of
  torch's CPU generator state is checked against a seeded template on every draw.
* CUDA (Philox4x32-10): a 64-bit key from ``manual_seed`` plus a 64-bit counter offset from
  ``set_offset``, whose two low bits torch requires to be zero: 126 bits per generator, so two
  such streams are summed (252 bits; the floor is 128), still far cheaper than the fallback.

Anything else (another device, a torch without ``set_offset``, a CPU state layout this module
does not recognise) falls back to summing :data:`SECURE_STREAMS` Gaussians of variance σ²C²/k,
each from a generator seeded with 64 OS bits: 192 bits, so a meet-in-the-middle search over the
seeds still costs 2¹²⁸ work, at k times the sampling cost. Outside secure mode one generator is
seeded from ``seed`` and checkpointed, so a replay reproduces the noise exactly: fine for tests,
no guarantee at all.

Neither MT19937 nor Philox is a cryptographic generator: an adversary who saw their raw outputs
could predict the rest. Here only the noised sum is released, and every step starts from a fresh
OS-filled state.

What floating-point sampling does *not* protect against: the Gaussian is sampled in fp32 (or
fp64), so its values lie on a non-uniform grid and its far tails are truncated; Mironov (2012)
showed that such artefacts can leak for the Laplace mechanism. A discrete Gaussian sampler
(Canonne, Kamath & Steinke 2020) over a fixed grid, with the clipped sum quantised to that grid,
would close that gap; this engine does not implement one.
"""

from __future__ import annotations

import math
import os
import struct
import sys
from typing import Any

import torch
from torch import Tensor

__all__ = ["SECURE_STREAMS", "NoiseSource", "entropic_generator", "os_seed"]

#: Independent OS-seeded generators summed per draw by the fallback (64 bits of seed each).
SECURE_STREAMS = 3

# torch's CPU generator state (``CPUGeneratorImplState``, 5056 bytes, native byte order):
# u64 initial seed, i32 left, i32 seeded, u64 next, 624 × u64 holding the 32-bit MT19937 words,
# f64 normal_x/normal_y/normal_rho, i32 normal_is_valid (+4 pad), f32 cached float normal,
# bool valid (+3 pad).  The normal caches must be cleared, or the first draw reuses an old sample.
_MT_WORDS = 624
_CPU_STATE_BYTES = 5056
_HEADER = struct.Struct("<QiiQ")
_WORDS_AT = _HEADER.size
_CACHES_AT = _WORDS_AT + 8 * _MT_WORDS


#: Draws per coordinate from :func:`entropic_generator` streams, by device type: each CPU stream
#: holds 19 937 OS bits, each CUDA stream 126, so CUDA sums two to clear the 128-bit floor.
_ENTROPIC_DRAWS = {"cpu": 1, "cuda": 2}


def os_seed() -> int:
    """A 63-bit seed from the OS CSPRNG (``torch.Generator.manual_seed`` takes at most 64)."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def _os_u64() -> int:
    return int.from_bytes(os.urandom(8), "little")


def _mt_words_from_os() -> tuple[int, ...]:
    """624 OS-random MT19937 words, redrawn in the (2⁻¹⁹⁹³⁷) case of the all-zero state (the
    low 31 bits of word 0 do not count), from which MT19937 outputs only zeros."""
    while True:
        words = struct.unpack(f"<{_MT_WORDS}I", os.urandom(4 * _MT_WORDS))
        if words[0] >> 31 or any(words[1:]):
            return words


def _cpu_state_from_os(generator: torch.Generator) -> Tensor | None:
    """A CPU generator state whose MT19937 words all come from the OS; None if the state layout is
    not the one this module knows (then the caller falls back to summed seeded streams)."""
    seed = _os_u64()
    generator.manual_seed(seed)
    template = generator.get_state()
    if (
        sys.byteorder != "little"
        or template.dtype != torch.uint8
        or template.numel() != _CPU_STATE_BYTES
    ):
        return None
    raw = bytearray(template.numpy().tobytes())
    # A freshly seeded generator: our seed, left = 1 (twist before the first output), seeded,
    # next = 0, word 0 = the seed's low 32 bits and empty normal caches.
    first_word = struct.unpack_from("<Q", raw, _WORDS_AT)[0]
    if _HEADER.unpack_from(raw, 0) != (seed, 1, 1, 0) or first_word != seed & 0xFFFFFFFF:
        return None
    if any(raw[_CACHES_AT:]):
        return None
    struct.pack_into(f"<{_MT_WORDS}Q", raw, _WORDS_AT, *_mt_words_from_os())
    return torch.frombuffer(raw, dtype=torch.uint8).clone()


def entropic_generator(device: torch.device) -> torch.Generator | None:
    """A generator for ``device`` whose state is fresh OS entropy (all of it on CPU, 126 bits on
    CUDA), or None where that cannot be done (then draws sum :data:`SECURE_STREAMS` streams)."""
    generator = torch.Generator(device=device)
    if generator.device.type == "cpu":
        state = _cpu_state_from_os(generator)
        if state is None:
            return None
        generator.set_state(state)
        return generator
    offsets = hasattr(generator, "set_offset") and hasattr(generator, "get_offset")
    if generator.device.type == "cuda" and offsets:
        offset = _os_u64() & ~3  # Philox offsets must be multiples of 4 (torch checks it)
        try:
            generator.manual_seed(_os_u64())
            generator.set_offset(offset)
        except RuntimeError:
            return None
        return generator if generator.get_offset() == offset else None
    return None


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
        draws = _ENTROPIC_DRAWS.get(self.device.type, 0)
        generators = [entropic_generator(self.device) for _ in range(draws)]
        if not generators or any(g is None for g in generators):
            return self._summed(noise, std=std)
        part_std = std / math.sqrt(len(generators))
        noise.normal_(0.0, part_std, generator=generators[0])
        for generator in generators[1:]:
            noise.add_(torch.empty_like(noise).normal_(0.0, part_std, generator=generator))
        return noise

    def _summed(self, noise: Tensor, *, std: float) -> Tensor:
        """The fallback: :data:`SECURE_STREAMS` streams, 64 OS bits of seed each, summed."""
        part_std = std / math.sqrt(SECURE_STREAMS)
        part = torch.empty_like(noise)
        noise.normal_(0.0, part_std, generator=self._fresh())
        for _ in range(SECURE_STREAMS - 1):
            noise.add_(part.normal_(0.0, part_std, generator=self._fresh()))
        return noise

    def _fresh(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(_os_u64())

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
