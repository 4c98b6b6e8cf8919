"""``ledger verify``: re-walk every hash chain and re-derive the aggregates from the entries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from privacy_finetuner.accounting import DpSegment
from privacy_finetuner.errors import PrivacyFinetunerError
from privacy_finetuner.ledger.budget import add_counts, counts_from_segments
from privacy_finetuner.ledger.chain import GENESIS_HASH, entry_hash
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import Dataset, Job, LedgerEntry
from privacy_finetuner.ledger.store import registration_payload

__all__ = ["VerifyResult", "anchors_from_report", "verify_ledger"]


@dataclass
class VerifyResult:
    """Outcome of a verification: problems found (empty means intact) and what was checked."""

    datasets: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    heads: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every chain and aggregate checked out."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "ok": self.ok,
            "datasets": self.datasets,
            "entries": self.entries,
            "problems": list(self.problems),
            "heads": dict(self.heads),
        }


def _accumulate(
    entry: LedgerEntry,
    ds: Dataset,
    charged: dict[str, int],
    job_charged: dict[str, dict[str, int]],
    reserved: dict[str, dict[str, int]],
    problems: list[str],
) -> None:
    if entry.seq == 1 and entry.kind == "register":
        pinned = {k: v for k, v in entry.payload.items() if k != "actor"}
        if pinned != registration_payload(ds):
            problems.append(
                f"data set {ds.id}: budget or identity differs from its registration entry"
            )
    elif entry.kind == "charge" and entry.job_id is not None:
        step = counts_from_segments([DpSegment.from_dict(entry.payload["segment"])])
        for key, steps in step.items():
            charged[key] = charged.get(key, 0) + steps
            per_job = job_charged.setdefault(entry.job_id, {})
            per_job[key] = per_job.get(key, 0) + steps
    elif entry.kind == "reserve" and entry.job_id is not None:
        reserved[entry.job_id] = counts_from_segments(
            DpSegment.from_dict(d) for d in entry.payload["planned"]
        )


def _check_dataset(ds: Dataset, entries: list[LedgerEntry], jobs: list[Job]) -> list[str]:
    problems: list[str] = []
    where = f"data set {ds.id}"
    prev = GENESIS_HASH
    charged: dict[str, int] = {}
    job_charged: dict[str, dict[str, int]] = {}
    reserved: dict[str, dict[str, int]] = {}
    expected_seq = 1
    for entry in entries:
        if entry.seq != expected_seq:
            problems.append(f"{where}: entry #{expected_seq} missing (next is #{entry.seq})")
        expected_seq = entry.seq + 1
        if entry.prev_hash != prev:
            problems.append(f"{where}: entry #{entry.seq} does not chain to the entry before it")
        digest = entry_hash(
            prev_hash=entry.prev_hash,
            dataset_id=entry.dataset_id,
            seq=entry.seq,
            kind=entry.kind,
            job_id=entry.job_id,
            payload=entry.payload,
            created_at=entry.created_at,
        )
        if digest != entry.hash:
            problems.append(f"{where}: entry #{entry.seq} ({entry.kind}) was modified")
        prev = entry.hash
        try:
            _accumulate(entry, ds, charged, job_charged, reserved, problems)
        except (KeyError, TypeError, ValueError, PrivacyFinetunerError):
            problems.append(f"{where}: entry #{entry.seq} ({entry.kind}) has a malformed payload")
    if not entries or entries[0].kind != "register":
        problems.append(f"{where}: registration entry missing")
    if len(entries) != ds.entry_count or (entries and entries[-1].seq != ds.entry_count):
        problems.append(
            f"{where}: {len(entries)} entries found, {ds.entry_count} recorded (entries deleted)"
        )
    if prev != ds.head_hash and entries:
        problems.append(f"{where}: chain head does not match the data set's head hash")
    if add_counts(ds.charged) != charged:
        problems.append(f"{where}: charged steps differ from the sum of charge entries")
    for job in jobs:
        if add_counts(job.charged) != job_charged.get(job.id, {}):
            problems.append(f"{where}: job {job.id} charges differ from its entries")
        planned = counts_from_segments(DpSegment.from_dict(d) for d in job.planned)
        if reserved.get(job.id) != planned:
            problems.append(f"{where}: job {job.id} plan differs from its reservation entry")
    return problems


def anchors_from_report(report: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """``{data set id: (entry count, chain head)}`` quoted by an earlier audit report."""
    return {
        d["id"]: (int(d["ledger_entries"]), str(d["chain_head"]))
        for d in report.get("datasets", [])
        if d.get("ledger_entries")
    }


def verify_ledger(
    db: Database,
    *,
    dataset_id: str | None = None,
    anchors: dict[str, tuple[int, str]] | None = None,
) -> VerifyResult:
    """Check every data set's chain (or one): hashes, sequence, head, aggregates.

    ``anchors`` (from :func:`anchors_from_report`) pin earlier heads: entry #count of each data
    set must still carry the quoted hash, which catches a history rewritten consistently by
    someone with write access to the database.

    Returns:
        a :class:`VerifyResult`; ``ok`` is False when any entry was edited, deleted or reordered,
        or when a data set's or job's stored totals disagree with its entries.
    """
    result = VerifyResult()
    with db.read_session() as session:
        stmt = select(Dataset).order_by(Dataset.created_at, Dataset.id)
        if dataset_id is not None:
            stmt = stmt.where(Dataset.id == dataset_id)
        for ds in session.scalars(stmt).all():
            entries = list(
                session.scalars(
                    select(LedgerEntry)
                    .where(LedgerEntry.dataset_id == ds.id)
                    .order_by(LedgerEntry.seq, LedgerEntry.id)
                ).all()
            )
            jobs = list(session.scalars(select(Job).where(Job.dataset_id == ds.id)).all())
            result.datasets += 1
            result.entries += len(entries)
            result.heads[ds.id] = ds.head_hash
            result.problems.extend(_check_dataset(ds, entries, jobs))
            if anchors and ds.id in anchors:
                count, head = anchors[ds.id]
                at = next((e for e in entries if e.seq == count), None)
                if at is None or at.hash != head:
                    result.problems.append(
                        f"data set {ds.id}: entry #{count} no longer has the hash quoted by the "
                        "earlier report (history rewritten)"
                    )
        if anchors:
            present = set(result.heads)
            for missing in sorted(set(anchors) - present):
                if dataset_id is None or missing == dataset_id:
                    result.problems.append(f"data set {missing}: quoted by the report, now missing")
    return result
