"""The stateful accountant: merging, caching, checkpoint round trip, δ > 1/n warning."""

from __future__ import annotations

import json

import pytest

from privacy_finetuner.accounting import DpSegment, PrivacyAccountant, check_delta, compute_epsilon
from privacy_finetuner.errors import CheckpointError, InvalidParameterError, PrivacyWarning


def test_steps_merge_and_epsilon_matches_function() -> None:
    acct = PrivacyAccountant("pld")
    for _ in range(50):
        acct.step(noise_multiplier=1.0, sample_rate=0.01)
    acct.step(noise_multiplier=2.0, sample_rate=0.01, steps=10)
    assert acct.history == (DpSegment(1.0, 0.01, 50), DpSegment(2.0, 0.01, 10))
    assert acct.steps == 60
    expected = compute_epsilon(list(acct.history), delta=1e-5)
    assert acct.get_epsilon(1e-5) == pytest.approx(expected, rel=1e-12)


def test_state_dict_round_trip_is_json() -> None:
    acct = PrivacyAccountant("rdp")
    acct.step(noise_multiplier=1.1, sample_rate=0.05, steps=7)
    state = json.loads(json.dumps(acct.state_dict()))
    restored = PrivacyAccountant("rdp")
    restored.load_state_dict(state)
    assert restored.history == acct.history
    assert restored.get_epsilon(1e-5) == acct.get_epsilon(1e-5)


def test_refuses_state_of_other_mechanism() -> None:
    acct = PrivacyAccountant("rdp")
    with pytest.raises(CheckpointError, match="rdp"):
        PrivacyAccountant("pld").load_state_dict(acct.state_dict())


def test_unknown_mechanism() -> None:
    with pytest.raises(InvalidParameterError):
        PrivacyAccountant("prv")


def test_delta_larger_than_one_over_n_warns() -> None:
    with pytest.warns(PrivacyWarning, match="1/n"):
        check_delta(1e-3, dataset_size=10_000)
    check_delta(1e-5, dataset_size=10_000)  # no warning (filterwarnings would not catch; see below)


def test_no_warning_below_one_over_n(recwarn: pytest.WarningsRecorder) -> None:
    check_delta(1e-5, dataset_size=10_000)
    assert not [w for w in recwarn if issubclass(w.category, PrivacyWarning)]
