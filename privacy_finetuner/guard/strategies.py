"""Replacement strategies: REDACT, MASK, HASH, ENCRYPT, K_ANONYMITY and custom callables.

:class:`Replacer` maps each entity type to one replacement function. Functions receive the
finding and the original value and return the text that takes its place; only ENCRYPT tokens can
be turned back (:meth:`Replacer.reveal`, which needs the key ring).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy_finetuner.errors import ConfigError, GuardError, GuardKeyError, PrivacyWarning
from privacy_finetuner.guard._model import ENTITY_TYPES, Finding, Strategy
from privacy_finetuner.guard.keys import KeyRing

__all__ = ["ENCRYPTED_TOKEN", "CustomStrategy", "Replacer", "StrategySpec"]

#: A custom strategy: ``(finding, value) -> replacement``.
CustomStrategy = Callable[[Finding, str], str]
StrategyLike = str | Strategy | CustomStrategy
StrategySpec = StrategyLike | Sequence[StrategyLike] | Mapping[str, StrategyLike]

#: ``[[ENC:EMAIL:k1:<base64url(nonce || ciphertext)>]]``
ENCRYPTED_TOKEN = re.compile(
    r"\[\[ENC:([A-Z_]{2,32}):([A-Za-z0-9_\-]{1,32}):([A-Za-z0-9_\-]{24,})\]\]"
)
_NUMERIC_TYPES = frozenset(
    {"CREDIT_CARD", "IBAN", "PHONE", "US_SSN", "UK_NINO", "NATIONAL_ID", "MEDICAL_RECORD_NUMBER"}
)
_NON_ALNUM = re.compile(r"[\W_]+")
_YEAR = re.compile(r"(?<!\d)(1[89]\d\d|20\d\d)(?!\d)")
_DEFAULT_KEYS = ("*", "default", "DEFAULT")


def _normalise(entity: str, value: str) -> str:
    """Canonical form hashed by ENTITY_HASHING, so "J.Doe@X.com " and "j.doe@x.com" agree."""
    if entity in _NUMERIC_TYPES:
        return _NON_ALNUM.sub("", value).upper()
    return " ".join(value.split()).casefold()


def _redact(finding: Finding, value: str) -> str:
    return f"[{finding.type}]"


def _mask(finding: Finding, value: str) -> str:
    if finding.type in _NUMERIC_TYPES:
        tail = _NON_ALNUM.sub("", value)[-4:]
        return "****" + tail
    return "****"


def _generalise(finding: Finding, value: str) -> str:
    if finding.type == "DATE_OF_BIRTH":
        year = _YEAR.search(value)
        if year:
            return f"[DATE_OF_BIRTH:{year.group()[:3]}0s]"
    if finding.type == "IP_ADDRESS":
        try:
            address = ipaddress.ip_address(value.split("%")[0])
        except ValueError:
            return _redact(finding, value)
        prefix = 16 if address.version == 4 else 32
        return f"[IP_ADDRESS:{ipaddress.ip_network(f'{address}/{prefix}', strict=False)}]"
    return _redact(finding, value)


class Replacer:
    """Chooses and applies the replacement of each finding.

    Args:
        spec: one strategy for every type (``"redact"``, ``Strategy.HASH``, a callable), a list of
            those and ``"TYPE=strategy"`` items, or a mapping ``{"EMAIL": "hash", "*": "redact"}``.
        keyring: a :class:`KeyRing` or a callable producing one on first use (keys are loaded
            only when a HASH or ENCRYPT strategy actually runs).
    """

    def __init__(
        self, spec: StrategySpec, keyring: KeyRing | Callable[[], KeyRing | None] | None = None
    ) -> None:
        self._keyring_source = keyring
        self._keyring: KeyRing | None = keyring if isinstance(keyring, KeyRing) else None
        default: StrategyLike = Strategy.REDACT
        per_type: dict[str, StrategyLike] = {}
        items: list[tuple[str | None, StrategyLike]] = []
        if isinstance(spec, Mapping):
            items = [(None if k in _DEFAULT_KEYS else k, v) for k, v in spec.items()]
        elif isinstance(spec, str | Strategy) or callable(spec):
            items = [(None, spec)]
        else:
            for item in spec:
                if isinstance(item, str) and ("=" in item or ":" in item):
                    name, _, chosen = item.replace(":", "=", 1).partition("=")
                    items.append((None if name in _DEFAULT_KEYS else name.strip(), chosen.strip()))
                else:
                    items.append((None, item))
        defaults = [value for key, value in items if key is None]
        if len(defaults) > 1:
            raise ConfigError("give one default strategy; use TYPE=strategy for the others")
        if defaults:
            default = defaults[0]
        for entity, choice in items:
            if entity is not None:
                if entity.upper() not in ENTITY_TYPES:
                    raise ConfigError(f"unknown entity type {entity!r} in strategies")
                per_type[entity.upper()] = choice
        self._default = self._function(default)
        self._per_type = {key: self._function(value) for key, value in per_type.items()}
        self.uses_keys = any(
            _strategy_name(v) in ("hash", "encrypt") for v in [default, *per_type.values()]
        )

    def _function(self, strategy: StrategyLike) -> CustomStrategy:
        if callable(strategy) and not isinstance(strategy, str):
            return strategy
        name = _strategy_name(strategy)
        table: dict[str, CustomStrategy] = {
            "redact": _redact,
            "mask": _mask,
            "hash": self._hash,
            "encrypt": self._encrypt,
            "k_anonymity": _generalise,
        }
        if name not in table:
            raise ConfigError(
                f"unknown strategy {strategy!r}; use redact, mask, hash, encrypt, k_anonymity "
                "or a callable"
            )
        return table[name]

    def replacement(self, finding: Finding, value: str) -> str:
        """The text that replaces ``value`` (found as ``finding``)."""
        return self._per_type.get(finding.type, self._default)(finding, value)

    # -- keys ---------------------------------------------------------------------------------
    def keyring(self, *, for_hash: bool = False) -> KeyRing:
        """The key ring, loaded on first use; HASH alone may fall back to a per-process key."""
        if self._keyring is None:
            source = self._keyring_source
            ring = source() if callable(source) else None
            if ring is None and for_hash:
                warnings.warn(
                    "no guard key configured: ENTITY_HASHING uses a random per-process key, so "
                    "pseudonyms are consistent within this run only; set PRIVACY_GUARD_KEY or give a key "
                    "file (--key-file on the command line)",
                    PrivacyWarning,
                    stacklevel=4,
                )
                ring = KeyRing.generate("ephemeral")
            if ring is None:
                raise GuardKeyError(
                    "ENCRYPT needs a key: set the PRIVACY_GUARD_KEY environment variable (or "
                    "the configured one) or give a key file (--key-file on the command line, "
                    "key_file= in Python)"
                )
            self._keyring = ring
        return self._keyring

    def _hash(self, finding: Finding, value: str) -> str:
        key = self.keyring(for_hash=True).subkey("hash")
        message = f"{finding.type}\x00{_normalise(finding.type, value)}".encode()
        digest = hmac.new(key, message, "sha256").hexdigest()[:12]
        return f"[{finding.type}_{digest}]"

    def _encrypt(self, finding: Finding, value: str) -> str:
        ring = self.keyring()
        kid = ring.active_id
        nonce = os.urandom(12)
        aad = f"{finding.type}:{kid}".encode()
        sealed = AESGCM(ring.subkey("encrypt", kid)).encrypt(nonce, value.encode(), aad)
        blob = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"[[ENC:{finding.type}:{kid}:{blob}]]"

    def decrypt_token(self, entity: str, kid: str, blob: str) -> str:
        """Open one ENCRYPT token; GuardKeyError if the key is missing or wrong."""
        ring = self.keyring()
        try:
            raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
        except (ValueError, binascii.Error) as exc:
            raise GuardError("malformed encrypted token") from exc
        aad = f"{entity}:{kid}".encode()
        try:
            plain = AESGCM(ring.subkey("encrypt", kid)).decrypt(raw[:12], raw[12:], aad)
        except InvalidTag as exc:
            raise GuardKeyError(f"wrong key for token encrypted with key id {kid!r}") from exc
        return plain.decode()

    def reveal(self, text: str) -> str:
        """``text`` with every ENCRYPT token replaced by its plaintext."""
        return ENCRYPTED_TOKEN.sub(lambda m: self.decrypt_token(*m.groups()), text)

    def reencrypt(self, text: str) -> str:
        """``text`` with every ENCRYPT token re-encrypted under the active key (rotation)."""

        def swap(match: re.Match[str]) -> str:
            entity, kid, blob = match.groups()
            if kid == self.keyring().active_id:
                return match.group()
            value = self.decrypt_token(entity, kid, blob)
            return self._encrypt(Finding(0, len(value), entity, 1.0, "reencrypt"), value)

        return ENCRYPTED_TOKEN.sub(swap, text)


def _strategy_name(strategy: object) -> str:
    if isinstance(strategy, Strategy):
        return strategy.value
    if isinstance(strategy, str):
        name = strategy.strip().lower()
        return {"entity_hashing": "hash", "k-anonymity": "k_anonymity", "kanon": "k_anonymity"}.get(
            name, name
        )
    return "callable"
