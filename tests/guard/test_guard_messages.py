"""protect_messages (chat + tool-call JSON, key-aware), explain, counts, Finding privacy."""

from __future__ import annotations

import json

from privacy_finetuner.guard import ContextGuard

MESSAGES = [
    {"role": "system", "content": "You book hotels."},
    {"role": "user", "content": [{"type": "text", "text": "I'm Maria Garcia, maria@x.es"}]},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "book",
                    "arguments": json.dumps(
                        {
                            "customer": {"name": "Maria Garcia", "email": "maria@x.es"},
                            "card_number": "4111111111111111",
                            "phone": "+34 912 345 678",
                            "address": "Calle de Alcalá 42",
                            "ssn": "078-05-1120",
                            "iban": "ES9121000418450200051332",
                            "notes": "late arrival, call 555-867-5309",
                            "nights": 2,
                            "product_name": "Sea View",
                        }
                    ),
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true, "email": "maria@x.es"}'},
]


def test_tool_call_arguments_are_protected_key_aware() -> None:
    guard = ContextGuard()
    result = guard.protect_messages(MESSAGES)
    assert MESSAGES[1]["content"][0]["text"].startswith("I'm Maria")  # input untouched
    args = json.loads(result.messages[2]["tool_calls"][0]["function"]["arguments"])
    assert args["customer"] == {"name": "[PERSON]", "email": "[EMAIL]"}
    assert args["card_number"] == "[CREDIT_CARD]" and args["phone"] == "[PHONE]"
    assert args["address"] == "[STREET_ADDRESS]" and args["ssn"] == "[US_SSN]"
    assert args["iban"] == "[IBAN]" and args["notes"] == "late arrival, call [PHONE]"
    assert args["nights"] == 2 and args["product_name"] == "Sea View"
    assert result.messages[2]["tool_calls"][0]["function"]["name"] == "book"
    assert result.messages[1]["content"][0]["text"] == "I'm [PERSON], [EMAIL]"
    assert json.loads(result.messages[3]["content"]) == {"ok": True, "email": "[EMAIL]"}
    assert result.messages[0] == MESSAGES[0]
    assert result.counts["EMAIL"] == 3 and result.counts["PHONE"] == 2
    assert guard.counts == result.counts


def test_non_json_arguments_fall_back_to_text() -> None:
    messages = [{"role": "assistant", "tool_calls": [{"function": {"arguments": "to a@b.com"}}]}]
    out = ContextGuard().protect_messages(messages).messages
    assert out[0]["tool_calls"][0]["function"]["arguments"] == "to [EMAIL]"


def test_counts_accumulate_across_calls_and_reset() -> None:
    guard = ContextGuard()
    guard.protect("a@b.com")
    guard.protect_batch(["c@d.com", "SSN 078-05-1120"])
    assert guard.counts == {"EMAIL": 2, "US_SSN": 1}
    guard.reset_counts()
    assert guard.counts == {}


def test_explain_never_contains_the_value() -> None:
    text = "Maria Garcia, maria@x.es, 4111 1111 1111 1111, sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    explanation = ContextGuard().explain(text)
    dumped = json.dumps(explanation)
    assert {item["type"] for item in explanation} == {"PERSON", "EMAIL", "CREDIT_CARD", "SECRET"}
    for secret in ("Maria", "maria@x.es", "4111", "sk_live"):
        assert secret not in dumped
    assert set(explanation[0]) == {"type", "start", "end", "length", "detector", "confidence"}
    findings = ContextGuard().protect(text).findings
    assert "maria" not in repr(findings).lower()


def test_spacy_backend_plugs_in_when_installed() -> None:
    import pytest

    spacy = pytest.importorskip("spacy")
    from privacy_finetuner.guard.ner import SpacyDetector

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "Zorblax"}])
    guard = ContextGuard(detectors=[SpacyDetector(nlp)])
    assert guard.protect("ask Zorblax today").text == "ask [PERSON] today"
