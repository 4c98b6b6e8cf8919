"""Client-level privacy accounting for federated rounds (what Flower's strategies leave to us).

One round is one release of ``global + η · (Σ clipped client updates + N(0, σ²C²)) / m``: a
Gaussian mechanism on the sum, whose sensitivity to one client is C. How it composes depends on
how clients were chosen:

* ``poisson``: every client joins independently with probability q. Each round is then exactly a
  step of DP-SGD with "examples" = clients, ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))``
  under add/remove-one-client, and the amplification by sampling is real.
* ``fixed``: exactly m clients are drawn. No amplification is claimed: each round is accounted as
  ``GaussianDpEvent(σ)`` (q = 1), i.e. as if the client were in every cohort. The neighbouring
  relation is zero-out (a client's data replaced by none, so its update is zero), under which one
  client moves the sum by at most C whether or not it was drawn.

The rounds are :class:`~privacy_finetuner.accounting.DpSegment` s, so ε comes from the same
dp-accounting PLD/RDP code as DP-SGD, and anyone can recompute it from the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from privacy_finetuner.accounting import (
    DpSegment,
    PrivacyAccountant,
    calibrate_noise_multiplier,
    compute_epsilon,
)
from privacy_finetuner.config.schema import FederatedConfig
from privacy_finetuner.errors import CalibrationError, ConfigError

__all__ = ["ClientLevelAccountant", "ClientLevelPlan", "plan_client_level"]


@dataclass(frozen=True)
class ClientLevelPlan:
    """The central DP schedule of a federated run.

    Attributes:
        noise_multiplier: σ; the server adds N(0, σ²C²) to the sum of clipped client updates.
        sample_rate: q used by the accountant (1.0 for ``fixed``: no amplification claimed).
        clients_per_round: m, the cohort size (``fixed``) or its expectation (``poisson``); the
            noisy sum is divided by it, never by the actual (private) count.
        num_clients: N, the population sampled from.
        rounds: planned rounds.
        clipping_norm: C, the bound on one client's update norm.
        delta: δ of the client-level guarantee.
        sampling: "fixed" or "poisson".
        accountant: "pld" or "rdp".
        expected_epsilon: ε(δ) after all planned rounds.
    """

    noise_multiplier: float
    sample_rate: float
    clients_per_round: float
    num_clients: int
    rounds: int
    clipping_norm: float
    delta: float
    sampling: str
    accountant: str
    expected_epsilon: float

    def segment(self, rounds: int = 1) -> DpSegment:
        """``rounds`` rounds of this plan as one accounting segment."""
        return DpSegment(
            noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate, steps=rounds
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as written to the federated report."""
        return dict(self.__dict__)


def plan_client_level(
    config: FederatedConfig, *, num_clients: int, accountant: str = "pld"
) -> ClientLevelPlan:
    """σ for the target client-level ε over ``config.rounds`` (or the ε a fixed σ gives).

    Raises:
        ConfigError: the cohort does not fit the population, or SecAgg+ with Poisson sampling.
        CalibrationError: the target ε is unreachable.
    """
    if num_clients < 2:
        raise ConfigError(f"federated learning needs at least 2 clients, got {num_clients}")
    m = config.clients_per_round or num_clients
    if m > num_clients:
        raise ConfigError(
            f"federated.clients_per_round ({m}) exceeds the number of clients ({num_clients})"
        )
    if config.sampling == "fixed":
        q = 1.0
        if config.secure_aggregation and m < 2:
            raise ConfigError("SecAgg+ needs at least 2 clients per round")
    else:
        q = m / num_clients
        if config.secure_aggregation and q < 1.0:
            # A Poisson cohort can be too small for SecAgg+ (< 2 clients); skipping such a round
            # depends on whether one particular client was drawn, which the accountant does not
            # cover. Refused rather than accounted wrongly.
            raise ConfigError(
                "federated.sampling: poisson with secure_aggregation needs every client in every "
                "round (clients_per_round = clients); use sampling: fixed for SecAgg+ cohorts"
            )
    if config.noise_multiplier is not None:
        sigma = config.noise_multiplier
    else:
        target = config.target_epsilon or 0.0
        try:
            sigma = calibrate_noise_multiplier(
                target_epsilon=target,
                delta=config.delta,
                sample_rate=q,
                steps=config.rounds,
                accountant=accountant,
                rtol=1e-3,
            ).noise_multiplier
        except CalibrationError:
            raise CalibrationError(
                f"client-level target epsilon {target:g} is unreachable with {config.rounds} "
                f"rounds at q={q:.4g}: raise the target or use fewer rounds"
            ) from None
    segment = DpSegment(noise_multiplier=sigma, sample_rate=q, steps=config.rounds)
    eps = compute_epsilon([segment], delta=config.delta, accountant=accountant)
    return ClientLevelPlan(
        noise_multiplier=sigma,
        sample_rate=q,
        clients_per_round=float(m) if config.sampling == "fixed" else q * num_clients,
        num_clients=num_clients,
        rounds=config.rounds,
        clipping_norm=config.clipping_norm,
        delta=config.delta,
        sampling=config.sampling,
        accountant=accountant,
        expected_epsilon=eps,
    )


class ClientLevelAccountant:
    """Records the rounds a federated run released and answers their client-level ε.

    A round is recorded when the server releases a new global model (or, for Poisson sampling,
    a noise-only update when nobody was drawn): exactly the releases the plan describes.
    """

    def __init__(self, plan: ClientLevelPlan) -> None:
        self.plan = plan
        self._accountant = PrivacyAccountant(plan.accountant)
        self.epsilons: list[float] = []

    @property
    def rounds(self) -> int:
        """Rounds recorded so far."""
        return self._accountant.steps

    def record_round(self) -> float:
        """Account one released round; returns ε(δ) after it."""
        self._accountant.step(
            noise_multiplier=self.plan.noise_multiplier, sample_rate=self.plan.sample_rate
        )
        eps = self.epsilon()
        self.epsilons.append(eps)
        return eps

    def epsilon(self, delta: float | None = None) -> float:
        """ε at ``delta`` (default: the plan's δ) over the rounds recorded so far."""
        if not self.rounds:
            return 0.0
        value = self._accountant.get_epsilon(self.plan.delta if delta is None else delta)
        return value if math.isfinite(value) else math.inf

    @property
    def history(self) -> list[dict[str, float | int]]:
        """The recorded rounds as accounting segments (σ, q, steps)."""
        return [s.to_dict() for s in self._accountant.history]
