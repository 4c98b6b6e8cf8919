"""The categories that leaked on text the project did not write (issue 16), and their hard negatives.

Cases are written here by hand from the categories (first names alone, lower-case names, names
that are common words, link tokens, birth-date formats, national phone formats, national ids,
secrets without a vendor prefix); none is copied from the evaluation sets in benchmarks/guard_eval.
"""

from __future__ import annotations

import json

import pytest
from stdnum import luhn
from stdnum.es import dni
from stdnum.fi import hetu

from privacy_finetuner.guard import ContextGuard
from privacy_finetuner.guard._validators import hetu_is_valid, nhs_is_valid

GUARD = ContextGuard()


def _hetu(body: str, sign: str) -> str:
    """A Finnish identity code with a valid check character (stdnum computes it)."""
    return f"{body[:6]}{sign}{body[6:]}{hetu._calc_checksum(body)}"


_PNR = "19900101238" + luhn.calc_check_digit("900101238")  # YYYYMMDDNNN + Luhn digit

FOUND = [
    ("PERSON", "Priya approved the refund yesterday", "Priya"),
    ("PERSON", "ok, this is Priya from billing", "Priya"),
    ("PERSON", "ticket closed, approved by jonas", "jonas"),
    ("PERSON", "ana lópez called about the parcel", "ana lópez"),
    ("PERSON", "hi, my name is vitoria", "vitoria"),
    ("PERSON", "Thanks, Rose", "Rose"),
    ("PERSON", "Dr. Hope Adams will call you", "Hope Adams"),
    ("PERSON", "forwarded to Bill Okafor", "Bill Okafor"),
    ("PERSON", "Zoë Ødegård signed the form", "Zoë Ødegård"),
    ("PERSON", "reviewed by Matej Novak", "Matej Novak"),
    ("PERSON", "My name is Vanessa P. Hertzberg", "Vanessa P. Hertzberg"),
    ("PERSON", '{"approver": "jonas", "ticket": 12}', "jonas"),
    ("PERSON", '{"owner": "Ana López", "status": "open"}', "Ana López"),
    (
        "SECRET",
        "join via https://app.example.com/invite/8fK2xQ9LmZ3pR7tVw1 today",
        "8fK2xQ9LmZ3pR7tVw1",
    ),
    (
        "SECRET",
        "get it at https://dl.example.net/s/Zq81LmPx04KdTe9A/report.pdf",
        "Zq81LmPx04KdTe9A",
    ),
    ("SECRET", "the signing secret " + "9f86d081" * 8 + " rotates", "9f86d081" * 8),
    (
        "SECRET",
        "api key dXNlcjpwYXNzd29yZDEyMzQ1Njc4OTA= expired",
        "dXNlcjpwYXNzd29yZDEyMzQ1Njc4OTA=",
    ),
    ("URL_CREDENTIAL", "postgres://admin:p@ss/w0rd@db.internal:5432/app", "admin:p@ss/w0rd"),
    ("URL_CREDENTIAL", "mongodb+srv://svc:S3cr3t!@cluster0.example.net", "svc:S3cr3t!"),
    ("DATE_OF_BIRTH", "user=42 dob=12-Mar-1985 status=ok", "12-Mar-1985"),
    ("DATE_OF_BIRTH", "DOB (MM/DD/YYYY): 03/12/1985", "03/12/1985"),
    ("DATE_OF_BIRTH", "she was born on the 3rd of March, 1985", "3rd of March, 1985"),
    ("DATE_OF_BIRTH", "birth_date: 1985-Mar-12", "1985-Mar-12"),
    ("DATE_OF_BIRTH", "date of birth 12.03.1985", "12.03.1985"),
    ("DATE_OF_BIRTH", "born March 1985 in Leeds", "March 1985"),
    ("PHONE", "appelle-moi au 06 12 34 56 78 demain", "06 12 34 56 78"),
    ("PHONE", "llámame al 612 345 678", "612 345 678"),
    ("PHONE", "ring me on 07700 900123", "07700 900123"),
    ("NATIONAL_ID", "henkilötunnus " + _hetu("131052308", "W"), _hetu("131052308", "W")),
    ("NATIONAL_ID", "code " + _hetu("010594903", "Y") + " on file", _hetu("010594903", "Y")),
    ("NATIONAL_ID", "NHS number 943 476 5919", "943 476 5919"),
    (
        "NATIONAL_ID",
        "DNI 1234567" + dni.calc_check_digit("01234567"),
        "1234567" + dni.calc_check_digit("01234567"),
    ),
    ("NATIONAL_ID", "nie x1234567" + "l", "x1234567l"),
    ("NATIONAL_ID", f"personnummer {_PNR} on file", _PNR),
    ("NATIONAL_ID", f"{_PNR}", _PNR),
    ("US_SSN", "SSN 078051120", "078051120"),
    ("US_SSN", "his number is 078 05 1120", "078 05 1120"),
    ("UK_NINO", "ni: ab123456c", "ab123456c"),
]

NOT_FOUND = [
    "Rose is a flower and I hope so too",
    "Mark the box, then pay the Bill at the desk",
    "Will you grant me access in May?",
    "Order 4829103345 shipped on 2024-03-12",
    "card-like 4111 1111 1111 1112 fails Luhn",
    "meeting moved to Mar 12, 2024; due 12-Mar-2025",
    "see https://github.com/acme/repo/commit/3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a",
    "commit sha 3f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a for the key rotation",
    "checksum md5 9e107d9d372bb6826bd81d3542a419d6",
    "read https://blog.example.com/posts/my-first-post-2024",
    "bought an iPhone 15 Pro and a ThinkPad X1 Carbon",
    "IBAN-shaped but invalid: AT61 1904 3002 3457 3202",
    "account groups 0123 4567 8901 2345 in the export",
    "Bot: where should I send it? User: home",
    "SKU 311290-1234 restocked",
]


@pytest.mark.parametrize(("entity", "text", "value"), FOUND)
def test_found_and_fully_covered(entity: str, text: str, value: str) -> None:
    findings = GUARD.find(text)
    start = text.index(value)
    covering = [f for f in findings if f.start <= start and f.end >= start + len(value)]
    assert covering, f"{entity} not covered in {text!r}: {findings}"
    assert covering[0].type == entity


@pytest.mark.parametrize("text", NOT_FOUND)
def test_hard_negative_stays(text: str) -> None:
    assert GUARD.find(text) == []


def test_hetu_validator_accepts_2023_signs_and_rejects_bad_checks() -> None:
    valid = _hetu("131052308", "W")
    assert hetu_is_valid(valid) and hetu_is_valid(_hetu("131052308", "-"))
    assert not hetu_is_valid(valid[:-1] + ("A" if valid[-1] != "A" else "B"))
    assert not hetu_is_valid("131352W308T")  # month 13


def test_nhs_validator() -> None:
    assert nhs_is_valid("9434765919")
    assert not nhs_is_valid("9434765918") and not nhs_is_valid("1111111111")


def test_address_block_lines_are_covered_but_a_phone_below_keeps_its_type() -> None:
    block = "Ken Ito\n\n3037 ul. Północna 73\n Apt. 946\n Suwałki\n\n Poland 11248\n\nThanks"
    findings = GUARD.find(block)
    street = next(f for f in findings if f.type == "STREET_ADDRESS")
    assert block[street.start : street.end].endswith("Poland 11248")
    assert block[street.end :].strip() == "Thanks"
    with_phone = "12 Main Street\nTel 020 7946 0958"
    assert [f.type for f in GUARD.find(with_phone)] == ["STREET_ADDRESS", "PHONE"]


def test_names_as_json_values_under_keys_that_do_not_say_name() -> None:
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {
                    "name": "close_ticket",
                    "arguments": '{"approver": "jonas", "owner": "Ana López", "state": "done"}',
                },
            }
        ],
    }
    out = GUARD.protect_messages([call]).messages[0]
    arguments = out["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments) == {"approver": "[PERSON]", "owner": "[PERSON]", "state": "done"}


def test_lower_case_common_words_are_never_names_alone() -> None:
    text = "can you grant access to the bill and mark it done by june"
    assert GUARD.find(text) == []


def test_tool_json_keeps_its_own_escaping() -> None:
    escaped = '{"note": "Callej\\u00f3n 5", "email": "a@b.com"}'
    plain = '{"note": "Callejón 5", "email": "a@b.com"}'
    for content in (escaped, plain):
        out = GUARD.protect_messages([{"role": "tool", "content": content}]).messages[0]
        assert out["content"] == content.replace("a@b.com", "[EMAIL]")
