"""A stateful accountant: the history of a run's DP steps and the ε they spend.

The engine calls :meth:`PrivacyAccountant.step` once per logical (noised) step with exactly the σ
and q the sampler used; consecutive identical steps merge into one :class:`DpSegment`, so history
stays small and serialises into checkpoints, reports and the ledger.
"""

from __future__ import annotations

from typing import Any

from privacy_finetuner.accounting._validation import check_accountant
from privacy_finetuner.accounting.epsilon import DpSegment, compute_epsilon
from privacy_finetuner.errors import CheckpointError

__all__ = ["PrivacyAccountant"]


class PrivacyAccountant:
    """Records DP-SGD steps and answers ε(δ) with dp-accounting's PLD or RDP accountant.

    Args:
        accountant: "pld" (tight, default) or "rdp".
    """

    def __init__(self, accountant: str = "pld") -> None:
        self.mechanism = check_accountant(accountant)
        self._history: list[DpSegment] = []
        self._cache: dict[tuple[int, int, float], float] = {}

    @property
    def history(self) -> tuple[DpSegment, ...]:
        """The segments recorded so far, oldest first."""
        return tuple(self._history)

    @property
    def steps(self) -> int:
        """Total logical steps recorded."""
        return sum(s.steps for s in self._history)

    def step(self, *, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` logical steps at noise multiplier σ and sample rate q."""
        new = DpSegment(noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps)
        last = self._history[-1] if self._history else None
        if (
            last is not None
            and last.noise_multiplier == new.noise_multiplier
            and last.sample_rate == new.sample_rate
        ):
            self._history[-1] = DpSegment(
                noise_multiplier=last.noise_multiplier,
                sample_rate=last.sample_rate,
                steps=last.steps + new.steps,
            )
        else:
            self._history.append(new)

    def get_epsilon(self, delta: float) -> float:
        """ε(δ) spent so far (0 before any step, ∞ if a step had σ = 0)."""
        key = (len(self._history), self.steps, delta)
        if key not in self._cache:
            self._cache[key] = compute_epsilon(
                self._history, delta=delta, accountant=self.mechanism
            )
        return self._cache[key]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the accounting exactly (JSON-serialisable)."""
        return {"mechanism": self.mechanism, "history": [s.to_dict() for s in self._history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one written by a different accountant."""
        if state.get("mechanism") != self.mechanism:
            raise CheckpointError(
                f"checkpoint was accounted with {state.get('mechanism')!r}, "
                f"this run uses {self.mechanism!r}"
            )
        self._history = [DpSegment.from_dict(d) for d in state.get("history", [])]
        self._cache.clear()

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:
        return f"PrivacyAccountant(mechanism={self.mechanism!r}, steps={self.steps})"
