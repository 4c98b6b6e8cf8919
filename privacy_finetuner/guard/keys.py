"""Keys for ENCRYPT (AES-256-GCM) and HASH (HMAC-SHA256), with rotation by key id.

A key ring is one or more ``kid:key`` entries; the first is *active* (used to encrypt and hash),
the others only open older tokens. Keys are 32 random bytes written in URL-safe base64 (or 64 hex
characters). The ring comes from an environment variable (``PRIVACY_GUARD_KEY`` by default) or
a key file, entries separated by commas or new lines::

    export PRIVACY_GUARD_KEY="k2:$(python -c 'import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())'),k1:<old key>"

To rotate: put the new key first, keep the old ones behind it until every token was re-encrypted
with :meth:`ContextGuard.reencrypt`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path

from privacy_finetuner.errors import GuardKeyError

__all__ = ["DEFAULT_KEY_ENV", "KeyRing"]

DEFAULT_KEY_ENV = "PRIVACY_GUARD_KEY"
_KID = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")


def _decode_key(text: str) -> bytes:
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if re.fullmatch(r"[0-9a-fA-F]{64}", text) else b""
        if not raw:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error) as exc:
        raise GuardKeyError("guard key is neither base64 nor hex") from exc
    if len(raw) != 32:
        raise GuardKeyError(f"guard key must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class KeyRing:
    """Ordered ``{key id: 32-byte key}``; the first entry is the active key.

    The keys never appear in ``repr`` or error messages.
    """

    entries: tuple[tuple[str, bytes], ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise GuardKeyError("key ring is empty")
        seen: set[str] = set()
        for kid, key in self.entries:
            if not _KID.match(kid) or kid in seen:
                raise GuardKeyError(f"invalid or duplicate key id {kid!r}")
            if len(key) != 32:
                raise GuardKeyError(f"key {kid!r} must be 32 bytes")
            seen.add(kid)

    def __repr__(self) -> str:
        return f"KeyRing(ids={[kid for kid, _ in self.entries]})"

    @property
    def active_id(self) -> str:
        """Id of the key used to encrypt and hash."""
        return self.entries[0][0]

    def key(self, kid: str) -> bytes:
        """The key with id ``kid``; GuardKeyError if the ring does not hold it."""
        for entry_id, key in self.entries:
            if entry_id == kid:
                return key
        raise GuardKeyError(f"no key with id {kid!r} in the key ring (rotated out?)")

    def subkey(self, purpose: str, kid: str | None = None) -> bytes:
        """Key derived for one purpose (``"encrypt"``, ``"hash"``) so the two never share bytes."""
        master = self.key(kid or self.active_id)
        return hmac.new(master, b"privacy-finetuner-guard/" + purpose.encode(), "sha256").digest()

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        """Parse ``"k2:<key>,k1:<key>"`` (or one bare key, whose id is derived from it)."""
        entries: list[tuple[str, bytes]] = []
        for item in re.split(r"[,\n]", spec):
            item = item.strip()
            if not item or item.startswith("#"):
                continue
            kid, sep, value = item.partition(":")
            if not sep:
                raw = _decode_key(kid)
                kid = "k" + hashlib.sha256(raw).hexdigest()[:6]
                entries.append((kid, raw))
            else:
                entries.append((kid.strip(), _decode_key(value)))
        return cls(tuple(entries))

    @classmethod
    def from_env(cls, var: str = DEFAULT_KEY_ENV) -> KeyRing | None:
        """The ring in environment variable ``var``, or None when it is unset or empty."""
        value = os.environ.get(var, "").strip()
        return cls.parse(value) if value else None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KeyRing:
        """The ring in a key file (same syntax as the environment variable)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise GuardKeyError(
                f"cannot read key file {os.fspath(path)!r}: {exc.strerror}"
            ) from exc
        return cls.parse(text)

    @classmethod
    def generate(cls, kid: str = "k1") -> KeyRing:
        """A fresh ring with one random key (for tests or one-off runs)."""
        return cls(((kid, os.urandom(32)),))

    @staticmethod
    def new_key_text() -> str:
        """A new random key in the text form the ring accepts."""
        return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
