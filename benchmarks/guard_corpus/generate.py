"""Deterministic labelled corpus for the context-guard benchmark.

``generate(n, seed)`` returns ``n`` records ``{"id", "kind", "locale", "text", "spans"}`` where each
span is ``{"start", "end", "type", "held_out"}`` (character offsets into ``text``). Record kinds:

* ``chat``: a user / assistant exchange that mentions identifiers in passing;
* ``tool_call``: an assistant tool call serialised as JSON (keys such as ``email``,
  ``card_number``, ``name``, ``address``) with a free-text ``notes`` field;
* ``log``: application log lines (IPs, e-mails, tokens, connection strings);
* ``email``: a message with headers, body and signature;
* ``clinical``: a clinical note (patient name, MRN, date of birth, phone, address).

Values come from Faker in seven locales (en_US, en_GB, de_DE, fr_FR, es_ES, it_IT, nl_NL);
secrets and UK NINOs are generated here. Every record also carries *hard negatives* that are not
PII and must not be flagged: Luhn-failing card-like numbers, order / invoice / tracking numbers,
UUIDs, hashes, non-birth dates, versions, prices and timestamps.

``held_out`` marks PERSON spans with a name part the shipped gazetteer lacks. The gazetteer is
built from every Faker locale, so this generator's names are nearly all known to it: recall on
names that the gazetteer never saw is measured on presidio-research's data set instead
(``benchmarks/guard_eval/``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import sys
from pathlib import Path
from typing import Any

from faker import Faker

sys.path.insert(0, str(Path(__file__).resolve().parent))

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")
KINDS = ("chat", "tool_call", "log", "email", "clinical")

_DOB_CUES = {
    "en_US": ("DOB: ", "born on ", "date of birth: "),
    "en_GB": ("DOB ", "date of birth ", "born "),
    "de_DE": ("geboren am ", "Geburtsdatum: "),
    "fr_FR": ("né le ", "date de naissance : "),
    "es_ES": ("fecha de nacimiento: ", "nacido el "),
    "it_IT": ("data di nascita: ", "nato il "),
    "nl_NL": ("geboortedatum: ", "geboren op "),
}
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y")


def _known(part: str) -> bool:
    from privacy_finetuner.guard._names import first_names, surnames

    word = part.casefold().strip(".")
    return word in first_names() or word in surnames()


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[dict[str, Any]] = []
        self.length = 0

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def pii(self, entity: str, value: str, held_out: bool = False) -> None:
        self.spans.append(
            {"start": self.length, "end": self.length + len(value), "type": entity,
             "held_out": held_out}
        )  # fmt: skip
        self.add(value)

    def text(self) -> str:
        return "".join(self.parts)


class CorpusGenerator:
    """Seeded generator; the same seed always gives the same corpus."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)
        self.fakers = {}
        for index, locale in enumerate(LOCALES):
            fake = Faker(locale)
            fake.seed_instance(seed * 1000 + index)
            self.fakers[locale] = fake

    # -- values -------------------------------------------------------------------------------
    def name(self, fake: Faker) -> tuple[str, bool]:
        first, last = fake.first_name(), fake.last_name()
        held = any(not _known(p) for p in f"{first} {last}".replace("-", " ").split())
        return f"{first} {last}", held

    def card(self, fake: Faker) -> str:
        number = fake.credit_card_number()
        if len(number) == 16 and self.rng.random() < 0.4:
            sep = self.rng.choice((" ", "-"))
            return sep.join(number[i : i + 4] for i in range(0, 16, 4))
        return number

    def iban(self, fake: Faker) -> str:
        value = fake.iban()
        if self.rng.random() < 0.5:
            return " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return value

    def nino(self) -> str:
        letters = "ABCEGHJKLMNPRSTWXYZ"
        prefix = self.rng.choice("ABCEGHJKLMNPRSTWXYZ") + self.rng.choice(letters.replace("O", ""))
        while prefix in ("BG", "GB", "NK", "KN", "TN", "NT", "ZZ"):
            prefix = "AB"
        digits = "".join(self.rng.choice(string.digits) for _ in range(6))
        suffix = self.rng.choice("ABCD")
        if self.rng.random() < 0.5:
            return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
        return f"{prefix}{digits}{suffix}"

    def national_id(self, locale: str) -> tuple[str, str]:
        """(cue text, id) for the locale's national identifier."""
        fake = self.fakers[locale]
        if locale == "it_IT":
            return "codice fiscale ", fake.ssn()
        if locale == "nl_NL":
            return "BSN: ", fake.ssn()
        if locale == "fr_FR":
            return "numéro de sécurité sociale (NIR) ", fake.ssn()
        if locale == "es_ES":
            return "DNI ", fake.nif()
        pl = Faker("pl_PL")
        pl.seed_instance(self.rng.randrange(1 << 30))
        return "PESEL: ", pl.ssn()

    def dob(self, fake: Faker, locale: str) -> tuple[str, str]:
        date = fake.date_of_birth(minimum_age=18, maximum_age=90)
        fmt = self.rng.choice(_DATE_FORMATS if locale.startswith("en") else _DATE_FORMATS[:4])
        return self.rng.choice(_DOB_CUES[locale]), date.strftime(fmt)

    def secret(self) -> str:
        rng = self.rng
        alnum = string.ascii_letters + string.digits

        def token(n: int, alphabet: str = alnum) -> str:
            return "".join(rng.choice(alphabet) for _ in range(n))

        kind = rng.randrange(7)
        if kind == 0:
            return "AKIA" + token(16, string.ascii_uppercase + string.digits)
        if kind == 1:
            return "ghp_" + token(36)
        if kind == 2:
            return "sk_live_" + token(24)
        if kind == 3:
            return "sk-proj-" + token(48)
        if kind == 4:
            return (
                "xoxb-"
                + token(11, string.digits)
                + "-"
                + token(12, string.digits)
                + "-"
                + token(24)
            )
        if kind == 5:
            header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').decode().rstrip("=")
            body = (
                base64.urlsafe_b64encode(
                    json.dumps({"sub": token(8), "iat": rng.randrange(10**9, 2 * 10**9)}).encode()
                )
                .decode()
                .rstrip("=")
            )
            return f"{header}.{body}.{token(43, alnum + '-_')}"
        return "AIza" + token(35, alnum + "-_")

    def hard_negative(self, fake: Faker) -> str:
        rng = self.rng
        kind = rng.randrange(12)
        if kind == 0:  # card-like, fails Luhn
            number = fake.credit_card_number(card_type="visa16")
            bad = number[:-1] + str((int(number[-1]) + rng.randrange(1, 10)) % 10)
            return f"reference card-like number {bad}"
        if kind == 1:
            return f"Order #{rng.randrange(10**6, 10**9)}"
        if kind == 2:
            return f"invoice INV-{rng.randrange(2019, 2026)}-{rng.randrange(10**5):05d}"
        if kind == 3:
            return f"request id {fake.uuid4()}"
        if kind == 4:
            return f"commit {hashlib.sha1(str(rng.random()).encode(), usedforsecurity=False).hexdigest()}"
        if kind == 5:
            return f"meeting on {fake.date_this_decade().strftime(rng.choice(_DATE_FORMATS))}"
        if kind == 6:
            return f"shipped {fake.date_this_year().isoformat()} via tracking 1Z{rng.randrange(10**15, 10**16)}"
        if kind == 7:
            return f"version {rng.randrange(1, 9)}.{rng.randrange(20)}.{rng.randrange(50)}"
        if kind == 8:
            return f"total ${rng.randrange(10, 9999)}.{rng.randrange(100):02d}"
        if kind == 9:
            return f"at {fake.iso8601()}Z"
        if kind == 10:
            return f"sha256 {hashlib.sha256(str(rng.random()).encode()).hexdigest()}"
        return f"ticket {rng.randrange(10**4, 10**7)} priority {rng.randrange(1, 5)}"

    # -- records ------------------------------------------------------------------------------
    def record(self, index: int) -> dict[str, Any]:
        locale = LOCALES[index % len(LOCALES)]
        kind = self.rng.choice(KINDS)
        fake = self.fakers[locale]
        b = _Builder()
        getattr(self, f"_{kind}")(b, fake, locale)
        return {"id": index, "kind": kind, "locale": locale, "text": b.text(), "spans": b.spans}

    def _filler(self, b: _Builder, fake: Faker, sentences: int = 1) -> None:
        b.add(" ".join(fake.sentence() for _ in range(sentences)) + " ")

    def _chat(self, b: _Builder, fake: Faker, locale: str) -> None:
        name, held = self.name(fake)
        b.add("user: Hi, my name is ")
        b.pii("PERSON", name, held)
        b.add(". ")
        self._filler(b, fake)
        b.add("You can reach me at ")
        b.pii("EMAIL", fake.email())
        b.add(" or call ")
        b.pii("PHONE", fake.phone_number())
        b.add(f". About {self.hard_negative(fake)}, ")
        options = ["card", "iban", "address", "dob", "id"]
        for choice in self.rng.sample(options, 2):
            if choice == "card":
                b.add("please charge my card ")
                b.pii("CREDIT_CARD", self.card(fake))
            elif choice == "iban":
                b.add("refund to IBAN ")
                b.pii("IBAN", self.iban(fake))
            elif choice == "address":
                b.add("ship it to ")
                b.pii("STREET_ADDRESS", fake.street_address().replace("\n", ", ").strip())
                b.add(f", {fake.city()}")
            elif choice == "dob":
                cue, date = self.dob(fake, locale)
                b.add(f"my {cue.strip()} " if cue.lower().startswith(("dob", "date")) else cue)
                b.pii("DATE_OF_BIRTH", date)
            else:
                self._national(b, fake, locale)
            b.add(". ")
        b.add("\nassistant: Thanks ")
        b.pii("PERSON", name, held)
        b.add(f", I have noted it. {self.hard_negative(fake)}.\n")

    def _national(self, b: _Builder, fake: Faker, locale: str) -> None:
        if locale == "en_US":
            b.add("my SSN is ")
            b.pii("US_SSN", fake.ssn())
        elif locale == "en_GB":
            b.add("my NI number is ")
            b.pii("UK_NINO", self.nino())
        else:
            cue, value = self.national_id(locale)
            b.add(cue)
            b.pii("NATIONAL_ID", value)

    def _tool_call(self, b: _Builder, fake: Faker, locale: str) -> None:
        name, held = self.name(fake)
        b.add('{"name": "create_booking", "arguments": {"customer": {"name": "')
        b.pii("PERSON", name, held)
        b.add('", "email": "')
        b.pii("EMAIL", fake.email())
        b.add('", "phone": "')
        b.pii("PHONE", fake.phone_number())
        b.add('", "address": "')
        b.pii("STREET_ADDRESS", fake.street_address().replace("\n", ", ").strip())
        b.add(f'", "city": "{fake.city()}"}}, "payment": {{"card_number": "')
        b.pii("CREDIT_CARD", self.card(fake))
        b.add(
            f'", "order_ref": "{self.hard_negative(fake)}", "amount": {self.rng.randrange(5, 900)}}}, '
        )
        b.add(f'"product_name": "{fake.word().title()} {fake.word().title()}", "notes": "')
        self._filler(b, fake)
        b.add(f'{self.hard_negative(fake)}"}}}}\n')

    def _log(self, b: _Builder, fake: Faker, locale: str) -> None:
        stamp = fake.iso8601()
        b.add(f"{stamp} INFO request from ")
        b.pii("IP_ADDRESS", fake.ipv4() if self.rng.random() < 0.7 else fake.ipv6())
        b.add(" user=")
        b.pii("EMAIL", fake.email())
        b.add(f" path=/api/v1/orders status=200 {self.hard_negative(fake)}\n")
        b.add(f"{stamp} DEBUG connecting to postgres://")
        user, password = fake.user_name(), fake.password(length=14, special_chars=False)
        b.pii("URL_CREDENTIAL", f"{user}:{password}")
        b.add(f"@db.internal:5432/app {self.hard_negative(fake)}\n")
        b.add(f"{stamp} WARN leaked key ")
        b.pii("SECRET", self.secret())
        b.add(" in config; api_key=")
        b.pii("SECRET", self.secret())
        b.add(f"\n{stamp} INFO {self.hard_negative(fake)} done\n")

    def _email(self, b: _Builder, fake: Faker, locale: str) -> None:
        sender, held = self.name(fake)
        b.add("From: ")
        b.pii("PERSON", sender, held)
        b.add(" <")
        b.pii("EMAIL", fake.email())
        b.add(">\nSubject: account update\n\nDear ")
        recipient, held2 = self.name(fake)
        b.pii("PERSON", recipient, held2)
        b.add(",\n")
        self._filler(b, fake, 2)
        b.add(f"Regarding {self.hard_negative(fake)}: please update my bank details to ")
        b.pii("IBAN", self.iban(fake))
        b.add(" and my address to ")
        b.pii("STREET_ADDRESS", fake.street_address().replace("\n", ", ").strip())
        b.add(f", {fake.postcode()} {fake.city()}. ")
        self._national(b, fake, locale)
        b.add(".\n\nBest regards,\n")
        b.pii("PERSON", sender, held)
        b.add("\nTel. ")
        b.pii("PHONE", fake.phone_number())
        b.add("\n")

    def _clinical(self, b: _Builder, fake: Faker, locale: str) -> None:
        name, held = self.name(fake)
        b.add("Patient: ")
        b.pii("PERSON", name, held)
        b.add("\nMRN: ")
        b.pii("MEDICAL_RECORD_NUMBER", f"{self.rng.randrange(10**6, 10**8)}")
        cue, date = self.dob(fake, locale)
        b.add(f"\n{cue}")
        b.pii("DATE_OF_BIRTH", date)
        b.add(f"\nSeen {self.hard_negative(fake)}. ")
        self._filler(b, fake, 2)
        b.add("Lives at ")
        b.pii("STREET_ADDRESS", fake.street_address().replace("\n", ", ").strip())
        b.add(". Emergency contact ")
        contact, held2 = self.name(fake)
        b.pii("PERSON", contact, held2)
        b.add(", phone ")
        b.pii("PHONE", fake.phone_number())
        b.add(f". Follow-up {self.hard_negative(fake)}.\n")


def generate(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` labelled records, deterministic for a given ``seed``."""
    generator = CorpusGenerator(seed)
    return [generator.record(index) for index in range(n)]


if __name__ == "__main__":
    for record in generate(3, seed=1):
        print(json.dumps(record, ensure_ascii=False))
