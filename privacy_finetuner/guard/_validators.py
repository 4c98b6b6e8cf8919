"""Cheap checksum and format validators used after a regex has proposed a candidate.

Each function takes the candidate string and answers quickly; the expensive ones
(``phonenumbers``, ``python-stdnum``) are only reached for the few candidates that survive the
regexes.
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

__all__ = [
    "hetu_is_valid",
    "nhs_is_valid",
    "card_brand",
    "digits_of",
    "iban_is_valid",
    "luhn_ok",
    "nino_score",
    "phone_score",
    "ssn_is_valid",
    "stdnum_match",
]

_NON_DIGIT = re.compile(r"\D")
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def digits_of(value: str) -> str:
    """The digits of ``value`` in order."""
    return _NON_DIGIT.sub("", value)


def luhn_ok(digits: str) -> bool:
    """Luhn (mod 10) check of a digit string."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = ord(char) - 48
        if index % 2:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """Brand of a payment card number by its IIN range and length, or None if none fits.

    Covers Visa, Mastercard (51–55 and the 2-series 2221–2720), American Express, Discover,
    Diners Club, JCB, UnionPay, Maestro and Mir.
    """
    length = len(digits)
    two, four = int(digits[:2]), int(digits[:4])
    six = int(digits[:6])
    if digits[0] == "4" and length in (13, 16, 19):
        return "visa"
    if (51 <= two <= 55 or 2221 <= four <= 2720) and length == 16:
        return "mastercard"
    if two in (34, 37) and length == 15:
        return "amex"
    if (digits.startswith("6011") or two == 65 or 644 <= int(digits[:3]) <= 649) and (
        16 <= length <= 19
    ):
        return "discover"
    if (300 <= int(digits[:3]) <= 305 or two in (36, 38, 39)) and 14 <= length <= 19:
        return "diners"
    if (3528 <= four <= 3589 and 16 <= length <= 19) or (
        digits.startswith(("2131", "1800")) and length == 15
    ):
        return "jcb"
    if two == 62 and 16 <= length <= 19:
        return "unionpay"
    if 2200 <= four <= 2204 and 16 <= length <= 19:
        return "mir"
    if (two == 50 or 56 <= two <= 69 or 622126 <= six <= 622925) and 12 <= length <= 19:
        return "maestro"
    return None


def iban_is_valid(candidate: str) -> bool:
    """ISO 13616 mod-97 check (country code, check digits, then the BBAN)."""
    value = _NON_ALNUM.sub("", candidate).upper()
    if not 15 <= len(value) <= 34 or not value[:2].isalpha() or not value[2:4].isdigit():
        return False
    rearranged = value[4:] + value[:4]
    numeric = "".join(str(int(char, 36)) for char in rearranged)
    return int(numeric) % 97 == 1


def ssn_is_valid(area: str, group: str, serial: str) -> bool:
    """US SSN structure: no 000/666/9xx area, no 00 group, no 0000 serial."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_HETU_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"
#: Century signs of the Finnish HETU, the 2023 ones (Y-U, B-F) included.
_HETU_CENTURY = frozenset("+-YXWVUABCDEF")


def hetu_is_valid(value: str) -> bool:
    """Finnish personal identity code ``DDMMYYCZZZQ`` with the 2023 century signs.

    python-stdnum 2.2 still rejects the new signs (``W``, ``B``, …) that Finland issues since 2023.
    """
    value = value.upper()
    if len(value) != 11 or value[6] not in _HETU_CENTURY or not value[:6].isdigit():
        return False
    body = value[:6] + value[7:10]
    if not body.isdigit() or not (1 <= int(value[:2]) <= 31 and 1 <= int(value[2:4]) <= 12):
        return False
    return _HETU_CHECK[int(body) % 31] == value[10]


def nhs_is_valid(digits: str) -> bool:
    """UK NHS number: ten digits, the last a mod-11 check digit (10 is never issued)."""
    if len(digits) != 10 or len(set(digits)) == 1:
        return False
    total = sum(int(d) * (10 - i) for i, d in enumerate(digits[:9]))
    check = 11 - total % 11
    return (0 if check == 11 else check) == int(digits[9])


_NINO_BAD_PREFIX = frozenset({"BG", "GB", "NK", "KN", "TN", "NT"})


def nino_score(prefix: str) -> float:
    """Confidence for a UK National Insurance number with this two-letter prefix (0 = invalid)."""
    prefix = prefix.upper()
    if prefix in _NINO_BAD_PREFIX or prefix[0] in "DFIQUV" or prefix[1] in "DFIOQUV":
        return 0.0
    return 0.6 if prefix == "ZZ" else 0.9  # ZZ is the prefix used in examples and test data


#: Default regions tried for numbers written without a country code.
DEFAULT_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL")


def phone_score(candidate: str, regions: tuple[str, ...] = DEFAULT_REGIONS) -> float:
    """How phone-like ``candidate`` is according to libphonenumber (0.0 to 1.0).

    1.0 for a valid number, 0.6 for a possible one (right length for some region), else 0.
    """
    return _phone_score(candidate, regions)


@lru_cache(maxsize=4096)
def _phone_score(candidate: str, regions: tuple[str, ...]) -> float:
    import phonenumbers

    text = candidate.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    tries: tuple[str | None, ...] = (None,) if text.startswith("+") else regions
    best = 0.0
    for region in tries:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return 1.0
        if phonenumbers.is_possible_number(number):
            best = 0.6
    return best


def ip_is_valid(candidate: str) -> bool:
    """True for a syntactically valid IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=64)
def _stdnum_module(name: str) -> Any:
    return importlib.import_module(f"stdnum.{name}")


def stdnum_match(candidate: str, modules: tuple[str, ...]) -> str | None:
    """The first python-stdnum module (``"nl.bsn"``, …) that validates ``candidate``, or None."""
    for name in modules:
        validator: Callable[[str], bool] = _stdnum_module(name).is_valid
        # a validator that raises on odd input means "not this identifier"
        try:
            if validator(candidate):
                return name
        except Exception:  # noqa: S112  # nosec B112
            continue
    return None
