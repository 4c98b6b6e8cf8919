"""Users are never split across clients; partitions are balanced, deterministic and stored safely."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from privacy_finetuner.data.tokenize import EncodedExample
from privacy_finetuner.errors import ConfigError, DataError
from privacy_finetuner.federated import partition_by_user
from privacy_finetuner.federated.partition import load_examples, save_examples


def _examples(users: int, seed: int = 0) -> list[EncodedExample]:
    rng = random.Random(seed)
    out = []
    for u in range(users):
        for s in range(rng.randint(1, 6)):
            out.append(EncodedExample([u, s, 7], [-100, s, 7], f"user-{u}"))
    rng.shuffle(out)
    return out


def test_each_user_lands_on_exactly_one_client() -> None:
    data = _examples(97)
    parts = partition_by_user(data, 10, user_of=lambda e: e.user_id, seed=3)
    assert sum(len(p) for p in parts) == len(data)
    owners: dict[str | None, int] = {}
    for i, part in enumerate(parts):
        for ex in part:
            assert owners.setdefault(ex.user_id, i) == i
    users_per_client = [len({e.user_id for e in p}) for p in parts]
    assert max(users_per_client) - min(users_per_client) <= 1


def test_split_ignores_file_order_and_follows_the_seed() -> None:
    data = _examples(40)
    shuffled = list(reversed(data))
    a = partition_by_user(data, 4, user_of=lambda e: e.user_id, seed=1)
    b = partition_by_user(shuffled, 4, user_of=lambda e: e.user_id, seed=1)
    c = partition_by_user(data, 4, user_of=lambda e: e.user_id, seed=2)

    def users(parts: list[list[EncodedExample]]) -> list[set[str | None]]:
        return [{e.user_id for e in p} for p in parts]

    assert users(a) == users(b)
    assert users(a) != users(c)


def test_anonymous_examples_are_their_own_users_and_too_many_clients_is_refused() -> None:
    data = [EncodedExample([1], [1], None) for _ in range(3)]
    parts = partition_by_user(data, 3, user_of=lambda e: e.user_id)
    assert [len(p) for p in parts] == [1, 1, 1]
    with pytest.raises(ConfigError, match="at least as many users"):
        partition_by_user(data, 4, user_of=lambda e: e.user_id)


def test_partition_files_round_trip_as_json(tmp_path: Path) -> None:
    data = _examples(5)
    path = tmp_path / "parts" / "client-0000.jsonl"
    save_examples(path, data)
    assert load_examples(path) == data
    path.write_text('{"input_ids": [1]}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"client-0000\.jsonl:1"):
        load_examples(path)
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")
