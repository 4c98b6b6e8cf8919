"""Round trips of every strategy: redact, mask, hash, encrypt (+ rotation), k-anonymity, callable."""

from __future__ import annotations

import pytest

from privacy_finetuner.errors import ConfigError, GuardKeyError
from privacy_finetuner.guard import ContextGuard, Finding, KeyRing, Strategy
from privacy_finetuner.guard.strategies import ENCRYPTED_TOKEN

TEXT = "Mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111."


@pytest.fixture()
def ring() -> KeyRing:
    return KeyRing.parse(f"k1:{KeyRing.new_key_text()}")


def test_redact() -> None:
    result = ContextGuard().protect(TEXT)
    assert result.text == "Mail [EMAIL] or call [PHONE], card [CREDIT_CARD]."
    assert result.counts == {"EMAIL": 1, "PHONE": 1, "CREDIT_CARD": 1}


def test_mask_keeps_last_four_of_numbers() -> None:
    text = ContextGuard(strategies=["mask"]).protect(TEXT).text
    assert "****1111" in text and "****0958" in text and "example.com" not in text


def test_hash_is_consistent_across_calls_and_guards(ring: KeyRing) -> None:
    one = ContextGuard(strategies=[Strategy.ENTITY_HASHING], keyring=ring)
    two = ContextGuard(strategies="hash", keyring=ring)
    a = one.protect("Jane.Doe@Example.com").text
    b = one.protect("contact: jane.doe@example.com ").text
    c = two.protect("jane.doe@example.com").text
    assert a.startswith("[EMAIL_") and a in b and a == c
    other = ContextGuard(strategies="hash", keyring=KeyRing.generate()).protect(
        "jane.doe@example.com"
    )
    assert other.text != c  # keyed: a different key gives different pseudonyms


def test_hash_without_key_warns_and_stays_consistent_in_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRIVACY_GUARD_KEY", raising=False)
    guard = ContextGuard(strategies=["hash"])
    with pytest.warns(UserWarning, match="per-process key"):
        first = guard.protect("a@b.com").text
    assert guard.protect("a@b.com").text == first


def test_encrypt_reveal_round_trip(ring: KeyRing) -> None:
    guard = ContextGuard(strategies=["encrypt"], keyring=ring)
    protected = guard.protect(TEXT).text
    assert "jane.doe" not in protected and len(ENCRYPTED_TOKEN.findall(protected)) == 3
    assert guard.reveal(protected) == TEXT


def test_encrypt_key_from_env_and_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    key = KeyRing.new_key_text()
    monkeypatch.setenv("MY_GUARD_KEY", f"env1:{key}")
    by_env = ContextGuard(strategies=["encrypt"], key_env="MY_GUARD_KEY")
    token = by_env.protect("a@b.com").text
    assert ":env1:" in token
    key_file = tmp_path / "guard.key"
    key_file.write_text(f"# comment\nenv1:{key}\n")
    monkeypatch.delenv("MY_GUARD_KEY")
    by_file = ContextGuard(strategies=["encrypt"], key_env="MY_GUARD_KEY", key_file=key_file)
    assert by_file.reveal(token) == "a@b.com"


def test_encrypt_without_key_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRIVACY_GUARD_KEY", raising=False)
    with pytest.raises(GuardKeyError, match="PRIVACY_GUARD_KEY"):
        ContextGuard(strategies=["encrypt"]).protect("a@b.com")


def test_key_rotation(ring: KeyRing) -> None:
    old = ContextGuard(strategies=["encrypt"], keyring=ring)
    token = old.protect("a@b.com").text
    new_key = KeyRing.new_key_text()
    rotated = KeyRing.parse(f"k2:{new_key},k1:{dict(ring.entries)['k1'].hex()}")
    guard = ContextGuard(strategies=["encrypt"], keyring=rotated)
    assert guard.reveal(token) == "a@b.com"  # old tokens still open
    assert ":k2:" in guard.protect("c@d.com").text  # new tokens use the active key
    moved = guard.reencrypt(token)
    assert ":k2:" in moved
    only_new = ContextGuard(strategies=["encrypt"], keyring=KeyRing.parse(f"k2:{new_key}"))
    assert only_new.reveal(moved) == "a@b.com"
    with pytest.raises(GuardKeyError, match="k1"):
        only_new.reveal(token)


def test_wrong_key_and_tampering_are_detected(ring: KeyRing) -> None:
    token = ContextGuard(strategies=["encrypt"], keyring=ring).protect("a@b.com").text
    impostor = ContextGuard(strategies=["encrypt"], keyring=KeyRing.generate("k1"))
    with pytest.raises(GuardKeyError, match="wrong key"):
        impostor.reveal(token)
    retyped = token.replace("ENC:EMAIL", "ENC:PHONE")  # type is authenticated data
    with pytest.raises(GuardKeyError):
        ContextGuard(strategies=["encrypt"], keyring=ring).reveal(retyped)


def test_keyring_repr_and_validation() -> None:
    ring = KeyRing.generate("main")
    assert "main" in repr(ring) and str(ring.entries[0][1]) not in repr(ring)
    with pytest.raises(GuardKeyError):
        KeyRing.parse("k1:tooshort")
    with pytest.raises(GuardKeyError):
        KeyRing.parse("")


def test_k_anonymity_strategy_generalises_quasi_identifiers() -> None:
    guard = ContextGuard(strategies=["k_anonymity"])
    text = guard.protect("DOB: 12/04/1985 from 192.168.10.77, mail a@b.com").text
    assert text == "DOB: [DATE_OF_BIRTH:1980s] from [IP_ADDRESS:192.168.0.0/16], mail [EMAIL]"


def test_callable_and_per_entity_mapping(ring: KeyRing) -> None:
    def initials(finding: Finding, value: str) -> str:
        return "".join(word[0] for word in value.split()) + "."

    guard = ContextGuard(
        strategies={"PERSON": initials, "EMAIL": "hash", "*": "mask"}, keyring=ring
    )
    text = guard.protect("Dear Anna Smith, mail anna@x.org, card 4111 1111 1111 1111").text
    assert text.startswith("Dear AS., mail [EMAIL_") and text.endswith("card ****1111")
    listed = ContextGuard(strategies=["redact", "EMAIL=mask"]).protect("a@b.com 078-05-1120")
    assert listed.text == "**** [US_SSN]"


def test_bad_strategy_specs() -> None:
    with pytest.raises(ConfigError, match="unknown strategy"):
        ContextGuard(strategies=["shred"])
    with pytest.raises(ConfigError, match="one default"):
        ContextGuard(strategies=["redact", "mask"])
    with pytest.raises(ConfigError, match="unknown entity"):
        ContextGuard(strategies={"NOPE": "redact"})
