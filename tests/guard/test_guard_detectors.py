"""Every built-in detector: positives (found with the right type) and hard negatives (not found)."""

from __future__ import annotations

import pytest

from privacy_finetuner.guard import ENTITY_TYPES, ContextGuard, Finding
from privacy_finetuner.guard._validators import card_brand, iban_is_valid, luhn_ok

GUARD = ContextGuard()

POSITIVES = [
    ("PERSON", "Hi, my name is Kimberly Dalton.", "Kimberly Dalton"),
    ("PERSON", "Dr. Ngozi Okonkwo-Adeyemi will see you", "Ngozi Okonkwo-Adeyemi"),
    ("PERSON", "Dear Benthe van Enschot,", "Benthe van Enschot"),
    ("PERSON", "Patient: LEHMANN, Anja", "LEHMANN, Anja"),
    ("PERSON", 'log {"full_name": "Priya Raghunathan"}', "Priya Raghunathan"),
    ("EMAIL", "mail john.o'brien+x@mail.example.co.uk now", "o'brien+x@mail.example.co.uk"),
    ("EMAIL", "write to jane [at] example [dot] org", "jane [at] example [dot] org"),
    ("PHONE", "call +44 20 7946 0958 today", "+44 20 7946 0958"),
    ("PHONE", "office (212) 555-0123 ext. 45", "(212) 555-0123 ext. 45"),
    ("PHONE", "Handy +49 151 23456789", "+49 151 23456789"),
    ("PHONE", "tel 020 7946 0958", "020 7946 0958"),
    ("CREDIT_CARD", "visa 4111 1111 1111 1111", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "mc 2223-0031-2200-3222", "2223-0031-2200-3222"),
    ("CREDIT_CARD", "amex 378282246310005", "378282246310005"),
    ("IBAN", "IBAN DE89 3704 0044 0532 0130 00 thanks", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "to NL91ABNA0417164300.", "NL91ABNA0417164300"),
    ("US_SSN", "SSN 078-05-1120", "078-05-1120"),
    ("US_SSN", "social security number 219099999", "219099999"),
    ("UK_NINO", "NI number AB 12 34 56 C", "AB 12 34 56 C"),
    ("NATIONAL_ID", "codice fiscale RSSMRA85T10A562S", "RSSMRA85T10A562S"),
    ("NATIONAL_ID", "BSN: 111222333", "111222333"),
    ("NATIONAL_ID", "DNI 12345678Z", "12345678Z"),
    ("NATIONAL_ID", "Steuer-ID 12345678995", "12345678995"),
    ("IP_ADDRESS", "from 192.168.10.77 at", "192.168.10.77"),
    ("IP_ADDRESS", "from 2001:db8:85a3::8a2e:370:7334 at", "2001:db8:85a3::8a2e:370:7334"),
    ("STREET_ADDRESS", "ship to 221B Baker Street, London", "221B Baker Street"),
    ("STREET_ADDRESS", "wohnt in der Lindenstraße 14, Berlin", "Lindenstraße 14"),
    ("STREET_ADDRESS", "Adresse : 8, rue de la Paix", "8, rue de la Paix"),
    ("STREET_ADDRESS", "Vivo en Calle de Alcalá 42, Madrid", "Calle de Alcalá 42"),
    ("DATE_OF_BIRTH", "DOB: 12/04/1985", "12/04/1985"),
    ("DATE_OF_BIRTH", "born on 3 March 1961", "3 March 1961"),
    ("DATE_OF_BIRTH", "Geburtsdatum: 12.07.1979", "12.07.1979"),
    ("URL_CREDENTIAL", "postgres://admin:s3cret@db:5432/app", "admin:s3cret"),
    ("URL_CREDENTIAL", "GET /reset?token=9f8e7d6c5b4a3f2e1d0c", "9f8e7d6c5b4a3f2e1d0c"),
    ("SECRET", "key AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("SECRET", "gh ghp_" + "a" * 36, "ghp_" + "a" * 36),
    ("SECRET", "stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("SECRET", "openai sk-proj-" + "Ab3" * 12, "sk-proj-" + "Ab3" * 12),
    ("SECRET", "slack xoxb-2048-4096-abcdefABCDEF1234", "xoxb-2048-4096-abcdefABCDEF1234"),
    (
        "SECRET",
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.SflKxwRJSMeKKF2QT4fw",
    ),
    (
        "SECRET",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----",
    ),
    ("SECRET", "Server=db;User Id=sa;Password=Tr0ub4dor&3;", "Tr0ub4dor&3"),
    ("MEDICAL_RECORD_NUMBER", "MRN: 00482913", "00482913"),
]

HARD_NEGATIVES = [
    "card-like 4111 1111 1111 1112 fails Luhn",
    "1234 5678 9012 3456 is not a card",
    "Order #4829103345 shipped",
    "invoice INV-2024-000451 paid",
    "request id 123e4567-e89b-12d3-a456-426614174000",
    "commit 9c56cc51b374c3ba189210d5b6d4bf57790d351c",
    "sha256 ada762a496c3a614c9d8b08c4221edb56e4206ae61f7ffa793edee5a6c23cdb3",
    "meeting on 2024-03-12 and again on 12/04/2025",
    "bogus IBAN DE89 3704 0044 0532 0130 01",
    "invalid SSNs 000-12-3456 and 666-12-3456",
    "version 1.2.3 and 3.10.4",
    "at 2024-03-12T10:15:30.123456Z",
    "total $4,520.00 for 3 items (ticket 88231)",
    "Meeting notes: Grant approved the May budget; Will reviews it in June.",
    "tracking 1Z6923283189954152",
]


@pytest.mark.parametrize(("entity", "text", "value"), POSITIVES)
def test_positive_is_found_with_its_type(entity: str, text: str, value: str) -> None:
    findings = GUARD.find(text)
    start = text.index(value)
    covering = [f for f in findings if f.start <= start and f.end >= start + len(value)]
    assert covering, f"{entity} not found in {text!r}: {findings}"
    assert covering[0].type == entity


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negative_is_not_flagged(text: str) -> None:
    assert GUARD.find(text) == []


def test_every_entity_type_has_a_positive_case() -> None:
    assert {entity for entity, _, _ in POSITIVES} == set(ENTITY_TYPES)


def test_entity_filter_and_unknown_entity() -> None:
    guard = ContextGuard(entities=["EMAIL"])
    assert [f.type for f in guard.find("a@b.com 4111 1111 1111 1111")] == ["EMAIL"]
    with pytest.raises(ValueError, match="unknown entity"):
        ContextGuard(entities=["NOPE"])


def test_sensitivity_levels_trade_recall() -> None:
    text = "Thanks, Maria"  # weak cue + single first name: only high sensitivity flags it
    assert ContextGuard(sensitivity="high").find(text)
    assert not ContextGuard(sensitivity="low").find(text)
    with pytest.raises(ValueError, match="sensitivity"):
        ContextGuard(sensitivity="extreme")


def test_custom_mrn_pattern_and_allow_list() -> None:
    guard = ContextGuard(mrn_patterns=[r"\bHOSP-\d{6}\b"], allow=["help@acme.com"])
    found = guard.find("ref HOSP-123456, mail help@acme.com or bob@acme.com")
    assert [(f.type, f.detector) for f in found] == [
        ("MEDICAL_RECORD_NUMBER", "mrn.custom"),
        ("EMAIL", "email.regex"),
    ]


def test_extra_detector_is_plugged_in() -> None:
    class Shouty:
        name = "shouty"

        def detect(self, text: str) -> list[Finding]:
            index = text.find("ACME")
            return [Finding(index, index + 4, "PERSON", 0.99, "shouty")] if index >= 0 else []

    guard = ContextGuard(detectors=[Shouty()])
    assert guard.protect("ask ACME").text == "ask [PERSON]"


def test_validators() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert card_brand("2223003122003222") == "mastercard"
    assert card_brand("378282246310005") == "amex"
    assert iban_is_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_is_valid("GB82 WEST 1234 5698 7654 33")


def test_long_text_windows_find_far_apart_entities() -> None:
    filler = "lorem ipsum dolor sit amet " * 40
    text = f"card 4111 1111 1111 1111 {filler} call +44 20 7946 0958 {filler} SSN 078-05-1120"
    assert [f.type for f in GUARD.find(text)] == ["CREDIT_CARD", "PHONE", "US_SSN"]
