"""The guard's public names: sorted, complete and importable."""

from __future__ import annotations

import privacy_finetuner.guard as guard


def test_all_is_sorted_and_resolves() -> None:
    assert guard.__all__ == sorted(guard.__all__, key=lambda name: (not name.isupper(), name))
    for name in guard.__all__:
        assert getattr(guard, name) is not None


def test_main_names_the_main_job_codes_against() -> None:
    from privacy_finetuner.guard import ContextGuard, Finding, Strategy

    assert Strategy.ENTITY_HASHING is Strategy.HASH
    assert {"protect", "protect_batch", "protect_messages", "explain", "reveal", "counts"} <= set(
        dir(ContextGuard)
    )
    assert Finding(0, 1, "EMAIL", 0.9, "x").to_dict()["type"] == "EMAIL"
