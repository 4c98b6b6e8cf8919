"""API keys (hashed, scoped, per tenant) and the failed-authentication rate limiter.

A key reads ``pfk_<id>_<secret>``: the id (public, 12 hex) finds the row, the secret (256 random
bits) is checked by comparing its sha256 with the stored digest in constant time. Because the
secret is high-entropy, a plain sha256 is as strong as a slow hash here, and verification stays
cheap enough for the per-request path. Only the id ever appears in logs, audit rows and metrics.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from sqlalchemy import select

from privacy_finetuner.errors import AuthError, ConfigError, NotFoundError
from privacy_finetuner.ledger.db import Database
from privacy_finetuner.ledger.models import ApiKey, utcnow

__all__ = [
    "SCOPES",
    "FailureLimiter",
    "KeyStore",
    "Principal",
]

#: admin: everything (data sets, keys); submit: jobs; read: GET data sets/jobs; guard: protect.
SCOPES = ("admin", "submit", "read", "guard")
_PREFIX = "pfk_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key id (never the secret), its tenant and scopes."""

    key_id: str
    tenant: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """admin implies every scope."""
        return "admin" in self.scopes or scope in self.scopes


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(scopes: str | list[str]) -> list[str]:
    """Validate a comma list (or list) of scope names."""
    items = scopes.split(",") if isinstance(scopes, str) else scopes
    out = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in out if s not in SCOPES]
    if unknown or not out:
        raise ConfigError(f"scopes must be a non-empty subset of {', '.join(SCOPES)}")
    return out


class KeyStore:
    """Create, verify, list and revoke API keys; verified keys are cached for ``cache_ttl_s``."""

    def __init__(self, db: Database, *, cache_ttl_s: float = 5.0) -> None:
        self.db = db
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        *,
        tenant: str,
        scopes: str | list[str],
        name: str = "",
        expires_in_days: float | None = None,
    ) -> tuple[str, ApiKey]:
        """Make a key; returns the full key (shown once) and its row."""
        if not tenant or len(tenant) > 64:
            raise ConfigError("tenant must be 1-64 characters")
        if expires_in_days is not None and not 0 < expires_in_days <= 3650:
            raise ConfigError("expires_in_days must be in (0, 3650]")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiKey(
            id=key_id,
            tenant=tenant,
            name=name,
            scopes=",".join(parse_scopes(scopes)),
            secret_sha256=_digest(secret),
            created_at=utcnow(),
            expires_at=(
                utcnow() + dt.timedelta(days=expires_in_days)
                if expires_in_days is not None
                else None
            ),
        )
        with self.db.write_session() as session:
            session.add(row)
        return f"{_PREFIX}{key_id}_{secret}", row

    def cached(self, presented: str) -> Principal | None:
        """The principal if this key was verified within the cache TTL (no database access)."""
        with self._lock:
            hit = self._cache.get(_digest(presented))
        if hit is not None and time.monotonic() - hit[0] < self.cache_ttl_s:
            return hit[1]
        return None

    def verify(self, presented: str) -> Principal:
        """The principal of a presented key.

        Raises:
            AuthError: malformed, unknown or revoked key (one message for all three).
        """
        cache_key = _digest(presented)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is not None and now - hit[0] < self.cache_ttl_s:
            return hit[1]
        principal = self._verify_db(presented)
        if self.cache_ttl_s > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[cache_key] = (now, principal)
        return principal

    def _verify_db(self, presented: str) -> Principal:
        invalid = AuthError("invalid API key")
        if not presented.startswith(_PREFIX) or len(presented) > 200:
            raise invalid
        key_id, sep, secret = presented[len(_PREFIX) :].partition("_")
        if not sep or not key_id or not secret:
            raise invalid
        with self.db.read_session() as session:
            row = session.get(ApiKey, key_id)
        expected = row.secret_sha256 if row is not None else _digest("\0" + secret)
        matches = hmac.compare_digest(_digest(secret), expected)
        if row is None or not matches or row.revoked_at is not None:
            raise invalid
        if row.expires_at is not None:
            expires = row.expires_at
            if expires.tzinfo is None:  # SQLite hands back naive UTC
                expires = expires.replace(tzinfo=dt.timezone.utc)
            if expires <= utcnow():
                raise invalid
        return Principal(key_id=row.id, tenant=row.tenant, scopes=frozenset(row.scopes.split(",")))

    def list(self, *, tenant: str | None = None) -> list[ApiKey]:
        """Keys (without secrets), oldest first."""
        with self.db.read_session() as session:
            stmt = select(ApiKey).order_by(ApiKey.created_at)
            if tenant is not None:
                stmt = stmt.where(ApiKey.tenant == tenant)
            return list(session.scalars(stmt).all())

    def revoke(self, key_id: str, *, tenant: str | None = None) -> ApiKey:
        """Revoke a key by id (takes effect within the cache TTL on every server); returns it.

        With ``tenant``, only that tenant's key (NotFoundError otherwise).
        """
        with self.db.write_session() as session:
            row = session.get(ApiKey, key_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                raise NotFoundError(f"API key {key_id!r} not found")
            row.revoked_at = utcnow()
        with self._lock:
            self._cache.clear()
        return row


class FailureLimiter:
    """Sliding-window count of failed authentications per client; blocks past ``limit``."""

    def __init__(self, *, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, client: str, now: float) -> deque[float]:
        q = self._failures.setdefault(client, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, client: str) -> bool:
        """True while the client has ``limit`` or more failures inside the window."""
        with self._lock:
            q = self._trim(client, time.monotonic())
            if not q:
                self._failures.pop(client, None)
            return len(q) >= self.limit

    def record(self, client: str) -> None:
        """Count one failed attempt."""
        with self._lock:
            if len(self._failures) > 100_000:
                self._failures.clear()
            self._trim(client, time.monotonic()).append(time.monotonic())
