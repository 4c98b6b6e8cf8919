"""Secure noise: one Gaussian per coordinate from a generator whose state is OS entropy."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from privacy_finetuner.engine import noise as noise_module
from privacy_finetuner.engine.noise import SECURE_STREAMS, NoiseSource, entropic_generator

CPU = torch.device("cpu")


def _source(*, secure: bool = True, seed: int | None = 0) -> NoiseSource:
    return NoiseSource(device=CPU, secure_mode=secure, seed=seed)


@pytest.fixture
def normal_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, Any]]]:
    """Every ``Tensor.normal_`` call as (elements filled, generator)."""
    calls: list[tuple[int, Any]] = []
    real: Callable[..., Tensor] = torch.Tensor.normal_

    def counting(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        calls.append((self.numel(), kwargs.get("generator")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "normal_", counting)
    yield calls


def test_cpu_state_is_the_os_words_as_a_reference_mt19937(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 624 OS words land where torch's MT19937 reads them: the generator's raw 32-bit outputs
    equal numpy's independent MT19937 loaded with the same words (5000 outputs: past two twists)."""
    words = noise_module._mt_words_from_os()
    monkeypatch.setattr(noise_module, "_mt_words_from_os", lambda: words)
    generator = entropic_generator(CPU)
    assert generator is not None
    got = torch.empty(5000, dtype=torch.int32).random_(generator=generator)  # 31 low bits
    reference = np.random.RandomState()
    reference.set_state(("MT19937", np.array(words, dtype=np.uint32), 624, 0, 0.0))
    expected = reference.randint(0, 2**32, size=5000, dtype=np.uint64) & 0x7FFFFFFF
    assert np.array_equal(got.numpy().astype(np.uint64), expected)


def test_the_draw_depends_only_on_os_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``os.urandom`` pinned the draws repeat; flip one state byte and they change."""
    like = torch.zeros(4096)

    def pinned(flip: int | None) -> Tensor:
        rng = np.random.default_rng(1234)

        def urandom(n: int) -> bytes:
            raw = bytearray(rng.bytes(n))
            if flip is not None and n == 4 * 624:
                raw[flip] ^= 1
            return bytes(raw)

        monkeypatch.setattr(os, "urandom", urandom)
        return _source(seed=None).gaussian(like, std=1.0)

    first, again, flipped = pinned(None), pinned(None), pinned(4 * 300)
    assert torch.equal(first, again)
    assert not torch.equal(first, flipped)


def test_secure_draws_differ_with_identical_seeds() -> None:
    like = torch.zeros(1000)
    a, b = _source(seed=7), _source(seed=7)
    draws = [a.gaussian(like, std=1.0), a.gaussian(like, std=1.0), b.gaussian(like, std=1.0)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(draws[i], draws[j])
    assert a.state_dict() is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_secure_draw_is_normal_with_the_requested_std(dtype: torch.dtype) -> None:
    """1e6 samples: KS against N(0, σ²) and the moments within ~5 standard errors."""
    n, std = 1_000_000, 2.5
    draw = _source().gaussian(torch.zeros(n, dtype=dtype), std=std)
    assert draw.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    values = draw.double().numpy()
    assert stats.kstest(values, stats.norm(scale=std).cdf).pvalue > 1e-4
    assert abs(values.mean()) < 5 * std / math.sqrt(n)
    assert abs(values.var() / std**2 - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.kurtosis(values)) < 5 * math.sqrt(24 / n)


def test_secure_cpu_draw_is_one_normal_per_coordinate(normal_calls: list[tuple[int, Any]]) -> None:
    source = _source()
    like = torch.zeros(3, 1000)
    source.gaussian(like, std=1.0)
    assert len(normal_calls) == 1
    filled, generator = normal_calls[0]
    assert filled == like.numel()
    assert isinstance(generator, torch.Generator) and generator is not source.generator


def test_devices_whose_stream_holds_too_few_bits_sum_several_entropic_streams(
    monkeypatch: pytest.MonkeyPatch, normal_calls: list[tuple[int, Any]]
) -> None:
    """The CUDA rule (two 126-bit Philox streams summed), exercised on CPU streams: one draw per
    stream, each from its own fresh generator, and the sum is still N(0, σ²)."""
    monkeypatch.setitem(noise_module._ENTROPIC_DRAWS, "cpu", 2)
    n, std = 200_000, 0.5
    values = _source().gaussian(torch.zeros(n), std=std).double().numpy()
    assert [filled for filled, _ in normal_calls] == [n, n]
    assert len({id(g) for _, g in normal_calls}) == 2
    assert stats.kstest(values, stats.norm(scale=std).cdf).pvalue > 1e-4
    assert abs(values.var() / std**2 - 1) < 5 * math.sqrt(2 / n)


def test_unknown_cpu_state_layout_falls_back_to_summed_streams(
    monkeypatch: pytest.MonkeyPatch, normal_calls: list[tuple[int, Any]]
) -> None:
    """A torch whose CPU state is not the layout this module checks: no single-draw generator,
    and the draw sums SECURE_STREAMS freshly seeded streams, still N(0, σ²)."""
    monkeypatch.setattr(noise_module, "_CPU_STATE_BYTES", 5000)
    assert entropic_generator(CPU) is None
    n, std = 200_000, 0.5
    values = _source().gaussian(torch.zeros(n), std=std).double().numpy()
    assert len(normal_calls) == SECURE_STREAMS
    assert len({id(g) for _, g in normal_calls}) == SECURE_STREAMS
    assert stats.kstest(values, stats.norm(scale=std).cdf).pvalue > 1e-4


def test_all_zero_mt_state_is_redrawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """MT19937 from the all-zero state outputs only zeros: such OS bytes are drawn again."""
    replies = iter([bytes(4 * 624), b"\x01" * (4 * 624)])
    monkeypatch.setattr(os, "urandom", lambda n: next(replies))
    words = noise_module._mt_words_from_os()
    assert words == (0x01010101,) * 624


def test_seeded_path_replays_the_plain_seeded_generator() -> None:
    """Outside secure mode: exactly ``normal_`` on a generator seeded with ``seed``, and the
    checkpointed state replays."""
    like = torch.zeros(2, 500)
    source = _source(secure=False, seed=11)
    first = source.gaussian(like, std=0.3)
    expected = torch.empty(2, 500).normal_(0.0, 0.3, generator=torch.Generator().manual_seed(11))
    assert torch.equal(first, expected)
    state = source.state_dict()
    second = source.gaussian(like, std=0.3)
    replay = _source(secure=False, seed=99)
    replay.load_state_dict(state)
    assert torch.equal(replay.gaussian(like, std=0.3), second)
    assert torch.equal(_source(secure=False, seed=11).gaussian(like, std=0.3), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Philox offsets need a CUDA device")
def test_cuda_generator_uses_a_random_honoured_offset() -> None:
    cuda = torch.device("cuda")
    generator = entropic_generator(cuda)
    assert generator is not None and generator.get_offset() % 4 == 0
    seed = generator.initial_seed()
    draws = []
    for offset in (0, generator.get_offset()):
        g = torch.Generator(device=cuda).manual_seed(seed)
        g.set_offset(offset)
        draws.append(torch.empty(1024, device=cuda).normal_(generator=g))
    assert not torch.equal(draws[0], draws[1])
    values = NoiseSource(device=cuda, secure_mode=True, seed=0).gaussian(
        torch.zeros(1_000_000, device=cuda), std=2.0
    )
    assert stats.kstest(values.double().cpu().numpy(), stats.norm(scale=2.0).cdf).pvalue > 1e-4
