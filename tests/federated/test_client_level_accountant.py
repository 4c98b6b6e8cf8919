"""Client-level accounting against dp-accounting itself and against Flower's own RDP accountant."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from privacy_finetuner.config.schema import FederatedConfig
from privacy_finetuner.errors import CalibrationError, ConfigError
from privacy_finetuner.federated import ClientLevelAccountant, plan_client_level


def _reference(event: dp_accounting.DpEvent, rounds: int, delta: float, accountant: str) -> float:
    acct = (
        pld_privacy_accountant.PLDAccountant()
        if accountant == "pld"
        else rdp_privacy_accountant.RdpAccountant()
    )
    return float(acct.compose(dp_accounting.SelfComposedDpEvent(event, rounds)).get_epsilon(delta))


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_fixed_cohorts_are_accounted_as_gaussian_without_amplification(accountant: str) -> None:
    config = FederatedConfig(clients=20, clients_per_round=5, rounds=4, noise_multiplier=1.3)
    plan = plan_client_level(config, num_clients=20, accountant=accountant)
    assert plan.sample_rate == 1.0  # 5 of 20 drawn, but no amplification is claimed
    assert plan.clients_per_round == 5
    acct = ClientLevelAccountant(plan)
    for r in range(1, 5):
        eps = acct.record_round()
        ref = _reference(dp_accounting.GaussianDpEvent(1.3), r, 1e-5, accountant)
        assert eps == pytest.approx(ref, rel=1e-9)
    assert acct.epsilons == sorted(acct.epsilons)
    assert acct.history == [{"noise_multiplier": 1.3, "sample_rate": 1.0, "steps": 4}]


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_poisson_cohorts_are_accounted_with_amplification(accountant: str) -> None:
    config = FederatedConfig(
        clients=100,
        clients_per_round=10,
        rounds=30,
        sampling="poisson",
        noise_multiplier=0.9,
        secure_aggregation=False,
    )
    plan = plan_client_level(config, num_clients=100, accountant=accountant)
    assert plan.sample_rate == pytest.approx(0.1)
    acct = ClientLevelAccountant(plan)
    for _ in range(30):
        acct.record_round()
    event = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(0.9))
    assert acct.epsilon() == pytest.approx(_reference(event, 30, 1e-5, accountant), rel=1e-9)
    fixed = plan_client_level(
        config.model_copy(update={"sampling": "fixed"}), num_clients=100, accountant=accountant
    )
    assert plan.expected_epsilon < fixed.expected_epsilon  # amplification is real


def test_calibration_meets_the_client_level_target() -> None:
    plan = plan_client_level(
        FederatedConfig(clients=10, rounds=3, target_epsilon=8.0), num_clients=10
    )
    assert 7.9 <= plan.expected_epsilon <= 8.0
    acct = ClientLevelAccountant(plan)
    per_round = [acct.record_round() for _ in range(3)]
    assert per_round[-1] == pytest.approx(plan.expected_epsilon, rel=1e-9)
    assert per_round[0] < per_round[1] < per_round[2]


def test_flower_rdp_accountant_agrees_with_ours() -> None:
    """Flower (≥ 1.42) ships an RDP accountant for its own DP wrappers: same numbers."""
    pytest.importorskip("flwr", reason="the federated extra (Python 3.11+)")
    from flwr.serverapp import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        RdpAccountant,
        SamplingMethod,
    )

    for sampling, method, m in (
        ("fixed", SamplingMethod.NO_AMPLIFICATION, 50),
        ("poisson", SamplingMethod.POISSON, 5),
    ):
        config = FederatedConfig(
            clients=50,
            clients_per_round=m,
            rounds=7,
            sampling=sampling,  # type: ignore[arg-type]
            noise_multiplier=1.1,
            secure_aggregation=False,
        )
        plan = plan_client_level(config, num_clients=50, accountant="rdp")
        ours = ClientLevelAccountant(plan)
        theirs = RdpAccountant(
            PrivacyConfig(
                target_delta=1e-5,
                population_size=50,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=method,
            )
        )
        for _ in range(7):
            ours.record_round()
            theirs.compose(
                GaussianPrivacyEvent(noise_multiplier=1.1, sample_size=m, population_size=50)
            )
        assert ours.epsilon() == pytest.approx(theirs.get_epsilon(1e-5), rel=1e-6)


def test_refuses_what_it_cannot_account() -> None:
    with pytest.raises(ConfigError, match="exceeds the number of clients"):
        plan_client_level(FederatedConfig(clients=4, clients_per_round=5), num_clients=4)
    with pytest.raises(ConfigError, match="poisson with secure_aggregation"):
        plan_client_level(
            FederatedConfig(clients=10, clients_per_round=5, sampling="poisson"), num_clients=10
        )
    with pytest.raises(ConfigError, match="at least 2 clients"):
        plan_client_level(FederatedConfig(clients=2), num_clients=1)
    with pytest.raises(CalibrationError, match="unreachable"):
        plan_client_level(FederatedConfig(clients=10, target_epsilon=1e-4), num_clients=10)
    with pytest.raises(ValueError, match="target_epsilon or noise_multiplier"):
        FederatedConfig(target_epsilon=None)
