"""K-anonymity: every quasi-identifier combination occurs at least k times (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_finetuner.errors import InvalidParameterError
from privacy_finetuner.guard import k_anonymize
from privacy_finetuner.guard.kanon import generalise

QIS = ("age", "zip", "dob", "gender")

records = st.lists(
    st.fixed_dictionaries(
        {
            "age": st.integers(0, 99),
            "zip": st.from_regex(r"\A[0-9]{5}\Z"),
            "dob": st.dates().map(lambda d: d.isoformat()),
            "gender": st.sampled_from(["f", "m", "x"]),
            "diagnosis": st.text(max_size=5),
        }
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows=records, k=st.integers(1, 6), suppression=st.sampled_from([0.0, 0.1]))
def test_every_combination_occurs_at_least_k_times(
    rows: list[dict[str, object]], k: int, suppression: float
) -> None:
    if len(rows) < k:
        with pytest.raises(InvalidParameterError):
            k_anonymize(rows, QIS, k=k)
        return
    result = k_anonymize(rows, QIS, k=k, max_suppression=suppression)
    combos = Counter(tuple(row[qi] for qi in QIS) for row in result.records)
    assert all(count >= k for count in combos.values())
    assert result.suppressed <= int(suppression * len(rows))
    assert len(result.records) + result.suppressed == len(rows)
    kept = [row["diagnosis"] for row in result.records]
    assert all(value in [r["diagnosis"] for r in rows] for value in kept)  # non-QIs untouched


def test_generalisation_ladders() -> None:
    assert generalise(37, 1) == "35-39" and generalise(37, 2) == "30-39"
    assert generalise("12345", 2) == "123**" and generalise("12345", 5) == "*"
    assert generalise("1985-04-12", 1) == "1985-04" and generalise("1985-04-12", 3) == "1980s"
    assert generalise("f", 1) == "*" and generalise(None, 1) == "*"


def test_parameter_checks() -> None:
    with pytest.raises(InvalidParameterError):
        k_anonymize([{"age": 1}], ["age"], k=0)
    with pytest.raises(InvalidParameterError):
        k_anonymize([{"age": 1}], ["age"], k=1, max_suppression=2.0)
