"""Split a data set across simulated clients by ``user_id``, and store encoded partitions.

A user's traces all land on one client: in a real federation a user's data lives on one device or
one organisation, and a client-level guarantee that split a user over clients would protect less
than it says. Users are ordered by a seeded hash and dealt out in turn, so client sizes differ by
at most one user and the split does not depend on the order of the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from privacy_finetuner.data.tokenize import EncodedExample
from privacy_finetuner.errors import ConfigError, DataError

__all__ = ["load_examples", "partition_by_user", "save_examples"]

T = TypeVar("T")


def partition_by_user(
    items: Sequence[T],
    num_clients: int,
    *,
    user_of: Callable[[T], str | None],
    seed: int = 0,
) -> list[list[T]]:
    """``num_clients`` lists of ``items``; all items of one user go to the same client.

    An item without a user id is its own user.

    Raises:
        ConfigError: fewer users than clients (some client would hold no data).
    """
    if num_clients < 1:
        raise ConfigError(f"the number of clients must be ≥ 1, got {num_clients}")
    owners = [user_of(item) or f"__item_{i}" for i, item in enumerate(items)]
    users = sorted(set(owners), key=lambda u: hashlib.sha256(f"{seed}:{u}".encode()).hexdigest())
    if len(users) < num_clients:
        raise ConfigError(
            f"{num_clients} clients need at least as many users; the training data has "
            f"{len(users)}"
        )
    client_of = {user: i % num_clients for i, user in enumerate(users)}
    parts: list[list[T]] = [[] for _ in range(num_clients)]
    for item, owner in zip(items, owners, strict=True):
        parts[client_of[owner]].append(item)
    return parts


def save_examples(path: Path, examples: Sequence[EncodedExample]) -> None:
    """Write encoded examples as JSON lines (token ids, labels, user id): no pickle."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for ex in examples:
            fh.write(
                json.dumps({"input_ids": ex.input_ids, "labels": ex.labels, "user_id": ex.user_id})
                + "\n"
            )


def load_examples(path: Path) -> list[EncodedExample]:
    """Read what :func:`save_examples` wrote.

    Raises:
        DataError: the file is missing or not a partition file.
    """
    if not path.is_file():
        raise DataError(f"partition file not found: {path}")
    out: list[EncodedExample] = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                out.append(
                    EncodedExample(
                        input_ids=[int(x) for x in row["input_ids"]],
                        labels=[int(x) for x in row["labels"]],
                        user_id=None if row["user_id"] is None else str(row["user_id"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{line_no}: not an encoded example ({exc})") from None
    return out
