"""Audit canaries: random secrets in a fixed frame, each trained on with probability ½.

They live in the data layer because planting them is data preparation: the training job shuffles
:func:`add_audit_canaries` into its training traces, and :mod:`privacy_finetuner.audit` later
re-scores the same plan against the trained model, without either importing the other.

One set of canaries serves all three measurements:

* the **members** (included canaries) are ranked against ``candidates`` drawn from the same
  space to get their exposure (Secret Sharer);
* members against non-members give the one-run ε lower bound and the membership-inference ROC.

A canary is a short conversation whose *assistant* turn states the secret, so the secret is a
training target (tokens in user turns carry no loss and would measure nothing). Every repeat of
a canary belongs to the same privacy unit (``user_id``), so with ``privacy_unit: user`` one canary
is exactly one unit and the audit speaks to the proven ε directly; with ``privacy_unit: example``
and ``repeats > 1`` it speaks to the group-privacy bound of ``repeats`` examples.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from privacy_finetuner.data.records import Trace, parse_trace
from privacy_finetuner.errors import DataError, InvalidParameterError

__all__ = [
    "CANARY_FILE",
    "AuditCanary",
    "CanaryPlan",
    "add_audit_canaries",
    "canary_messages",
    "canary_traces",
    "draw_candidates",
    "format_secret",
    "plan_canaries",
]

#: Written into the run directory: the canaries and which of them were trained on.
CANARY_FILE = "audit_canaries.json"

_DIGITS = 12
_SYSTEM = "You are the account assistant of Harbor Bank. Answer the customer's question."
_QUESTION = "Can you remind me of my account recovery code?"
_ANSWER = "Of course. Your recovery code is {secret}."


def format_secret(code: str) -> str:
    """``123456789012`` → ``1234-5678-9012``."""
    return f"{code[:4]}-{code[4:8]}-{code[8:]}"


def _random_code(rng: random.Random) -> str:
    return "".join(rng.choice("0123456789") for _ in range(_DIGITS))


@dataclass(frozen=True)
class AuditCanary:
    """One secret and whether the training set holds it (``repeats`` times)."""

    id: str
    secret: str
    included: bool


@dataclass(frozen=True)
class CanaryPlan:
    """Everything the audit needs to re-score a run's canaries.

    Attributes:
        canaries: the audit canaries (members and non-members).
        repeats: training traces per included canary.
        seed: seed of the draw (candidates use ``seed + 1``).
        system, question, answer: the conversation frame; ``answer`` has a ``{secret}`` field.
        space_size: number of possible secrets (10¹² twelve-digit codes).
        privacy_unit_per_canary: True when all repeats of a canary share one ``user_id``.
    """

    canaries: list[AuditCanary]
    repeats: int
    seed: int
    system: str = _SYSTEM
    question: str = _QUESTION
    answer: str = _ANSWER
    space_size: float = float(10**_DIGITS)
    privacy_unit_per_canary: bool = True
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def members(self) -> list[AuditCanary]:
        """The canaries that were trained on."""
        return [c for c in self.canaries if c.included]

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``audit_canaries.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CanaryPlan:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: the record is not a canary plan.
        """
        try:
            canaries = [AuditCanary(**c) for c in raw["canaries"]]
            rest = {k: v for k, v in raw.items() if k != "canaries"}
            return cls(canaries=canaries, **rest)
        except (KeyError, TypeError) as exc:
            raise DataError(f"not an audit canary plan: {exc}") from None

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CanaryPlan:
        """Read a plan written by :meth:`save`.

        Raises:
            DataError: unreadable or malformed.
        """
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path} does not hold a JSON object")
        return cls.from_dict(raw)


def plan_canaries(
    m: int, *, repeats: int = 1, seed: int = 0, inclusion_probability: float = 0.5
) -> CanaryPlan:
    """Draw ``m`` distinct random secrets and include each with probability ½.

    The draw uses a seeded PRNG: canaries are test data, not secrets to protect, and a
    reproducible audit is worth more than unpredictability here.
    """
    if m < 2:
        raise InvalidParameterError(f"an audit needs at least 2 canaries, got {m}")
    if repeats < 1:
        raise InvalidParameterError(f"repeats must be ≥ 1, got {repeats}")
    if not 0 < inclusion_probability < 1:
        raise InvalidParameterError("inclusion_probability must be in (0, 1)")
    rng = random.Random(seed)  # noqa: S311  # nosec B311 - reproducible test data
    codes: set[str] = set()
    canaries: list[AuditCanary] = []
    while len(canaries) < m:
        code = _random_code(rng)
        if code in codes:
            continue
        codes.add(code)
        included = rng.random() < inclusion_probability
        canaries.append(AuditCanary(f"audit-{len(canaries):04d}", format_secret(code), included))
    return CanaryPlan(canaries=canaries, repeats=repeats, seed=seed)


def canary_messages(plan: CanaryPlan, secret: str) -> list[dict[str, Any]]:
    """The canary conversation for ``secret`` in chat-template form."""
    return [
        {"role": "system", "content": plan.system},
        {"role": "user", "content": plan.question},
        {"role": "assistant", "content": plan.answer.format(secret=secret)},
    ]


def canary_traces(plan: CanaryPlan) -> list[dict[str, Any]]:
    """JSONL records (OpenAI chat form) for the included canaries, ``repeats`` each, all repeats
    of a canary under one ``user_id``. Shuffle them into the training data."""
    records: list[dict[str, Any]] = []
    for canary in plan.members:
        for r in range(plan.repeats):
            records.append(
                {
                    "messages": canary_messages(plan, canary.secret),
                    "user_id": canary.id,
                    "session_id": f"{canary.id}-r{r}",
                    "meta": {"audit_canary": canary.id},
                }
            )
    return records


def draw_candidates(plan: CanaryPlan, n: int) -> list[str]:
    """``n`` secrets drawn uniformly from the space, excluding the plan's own canaries."""
    rng = random.Random(plan.seed + 1)  # noqa: S311  # nosec B311 - reproducible test data
    taken = {c.secret for c in plan.canaries}
    out: list[str] = []
    while len(out) < n:
        secret = format_secret(_random_code(rng))
        if secret not in taken:
            out.append(secret)
    return out


def add_audit_canaries(
    traces: Sequence[Trace], *, canaries: int = 64, repeats: int = 10, seed: int = 0
) -> tuple[list[Trace], CanaryPlan]:
    """``traces`` with the included audit canaries shuffled in, and the plan to save later.

    Call it after the train/validation split, so no canary user is held out for validation.
    """
    plan = plan_canaries(canaries, repeats=repeats, seed=seed)
    planted = [*traces, *(parse_trace(record) for record in canary_traces(plan))]
    random.Random(seed).shuffle(planted)  # noqa: S311  # nosec B311 - data order only
    return planted, plan
