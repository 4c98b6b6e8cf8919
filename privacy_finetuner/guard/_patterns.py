"""Regex + validator rules for the structured entity types (everything except names/addresses).

Each rule is one compiled regular expression and a small function that validates a match (Luhn,
mod-97, libphonenumber, python-stdnum, context words) and scores it. Rules whose pre-filter
(a cheap ``in`` test on the whole text) fails are skipped, so plain prose costs a few regex scans.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from privacy_finetuner.guard._model import Finding
from privacy_finetuner.guard._rule import Rule, Scorer, context_before
from privacy_finetuner.guard._secrets import (
    KEYED_SECRET,
    NEAR_KEY,
    NEAR_KEY_ANCHOR,
    PATH_TOKEN,
    SECRET_ANCHOR,
    URL_CRED,
    SignatureRule,
    keyed_secret,
    near_key,
    path_token,
    url_cred,
)
from privacy_finetuner.guard._validators import (
    card_brand,
    digits_of,
    hetu_is_valid,
    iban_is_valid,
    ip_is_valid,
    luhn_ok,
    nhs_is_valid,
    nino_score,
    phone_score,
    ssn_is_valid,
    stdnum_match,
)

__all__ = ["RULES", "Rule", "context_before"]


def _span(group: int = 0, score: float = 0.95) -> Scorer:
    def scorer(match: re.Match[str], text: str) -> tuple[int, int, float]:
        return match.start(group), match.end(group), score

    return scorer


_NEGATIVE_CUE = re.compile(
    r"(?:order|invoice|inv|ref|reference|ticket|tracking|transaction|txn|po|sku|item|case|"
    r"build|version|serial|isbn|batch|lot|job|run|request|req|no\.|#)\W{0,4}$"
)

# --- e-mail -----------------------------------------------------------------------------------
_EMAIL_DOMAIN = re.compile(
    r"@[\w\-]+(?:\.[\w\-]+)*\.(?:[A-Za-z]{2,24}|xn--[a-z0-9]{2,59})(?![\w\-])"
)
_NOT_LOCAL = re.compile(r"[^\w.+\-']")
_EMAIL_OBFUSCATED = re.compile(
    r"(?<![\w.])[\w.+\-]{1,64}[ \t]?[\[(\{]at[\])\}][ \t]?[\w\-]+(?:[ \t]?[\[(\{]dot[\])\}][ \t]?[\w\-]+)+"
    r"|(?<![\w.])[\w.+\-]{2,64} at [\w\-]+ dot (?:com|org|net|edu|gov|io|de|fr|es|it|nl|co\.uk|uk)\b"
)


class EmailRule(Rule):
    """E-mail addresses, found from their ``@`` outwards (and ``name [at] host [dot] com``)."""

    def findings(self, text: str, lower: str | None = None) -> Iterator[Finding]:
        if "@" in text:
            for match in _EMAIL_DOMAIN.finditer(text):
                at = match.start()
                window = text[max(0, at - 64) : at][::-1]
                stop = _NOT_LOCAL.search(window)
                size = stop.start() if stop is not None else len(window)
                if size:
                    yield Finding(at - size, match.end(), "EMAIL", 0.95, self.name)
        source = lower if lower is not None else text.lower()
        if "at]" in source or "at)" in source or "at}" in source or " dot " in source:
            for match in _EMAIL_OBFUSCATED.finditer(text):
                yield Finding(match.start(), match.end(), "EMAIL", 0.8, self.name)


# --- payment cards ----------------------------------------------------------------------------
_CARD = re.compile(r"\d(?<![\w.\-]\d)(?:[ \-]?\d){11,18}(?![\w])")
_CARD_CUE = re.compile(
    r"card|visa|master|amex|credit|debit|cc|pan|payment|kreditkarte|carte|tarjeta"
)


def _card(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    digits = digits_of(match.group())
    if not luhn_ok(digits):
        return None
    context = context_before(text, match.start())
    brand = card_brand(digits)
    if brand is None:
        return (match.start(), match.end(), 0.6) if _CARD_CUE.search(context) else None
    if _NEGATIVE_CUE.search(context) and not _CARD_CUE.search(context):
        return None
    return match.start(), match.end(), 0.95


# --- IBAN -------------------------------------------------------------------------------------
_IBAN = re.compile(
    r"[A-Z](?<!\w[A-Z])[A-Z]\d{2}(?:([ \-]?)[A-Z0-9]{4}(?:\1[A-Z0-9]{4}){1,6}(?:\1[A-Z0-9]{1,3})?)\b"
)


def _iban(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group()
    if iban_is_valid(value):
        return match.start(), match.end(), 0.95
    sep = match.group(1) or " "
    parts = value.split(sep)  # the greedy match may have swallowed a following word
    while len(parts) > 1:
        parts.pop()
        candidate = sep.join(parts)
        if iban_is_valid(candidate) and stdnum_match(candidate, ("iban",)):  # length per country
            return match.start(), match.start() + len(candidate), 0.95
    return None


# --- national identifiers ---------------------------------------------------------------------
_SSN = re.compile(r"(\d(?<![\d\-]\d)\d{2})([\- ]?)(\d{2})\2(\d{4})(?![\d\-])")
_SSN_CUE = re.compile(r"ssn|social security|soc\.? sec|tin\b|taxpayer")


def _ssn(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if not ssn_is_valid(match.group(1), match.group(3), match.group(4)):
        return None
    cue = bool(_SSN_CUE.search(context_before(text, match.start(), 32)))
    if not match.group(2):
        return (match.start(), match.end(), 0.85) if cue else None
    if match.group(2) == " " and not cue:
        return match.start(), match.end(), 0.6
    return match.start(), match.end(), 0.95 if cue else 0.85


_NINO = re.compile(r"([A-Za-z](?<!\w[A-Za-z])[A-Za-z])[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-Da-d]\b")


def _nino(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group()
    if not (value.isupper() or value.islower()):
        return None
    score = nino_score(match.group(1))
    if score and value.islower():  # "tw987654a" typed in a chat: same number, less certain
        score = 0.6
    return (match.start(), match.end(), score) if score else None


_NATIONAL_STRONG = re.compile(
    r"\d(?<!\w\d)(?:\d{6,7}-?[A-Za-z]\b"  # ES DNI (leading zeros may be dropped)
    r"|\d{5}[\-+A-FU-Y]\d{3}[0-9A-Y]\b"  # FI HETU
    r"|(?:\d{2})?\d{5}[\-+]\d{4}\b"  # SE personnummer, DK CPR
    r"|[ ]?\d{2}[ ]?\d{2}[ ]?(?:\d{2}|2[AB])[ ]?\d{3}[ ]?\d{3}[ ]?\d{2}\b)"  # FR NIR
)
_NATIONAL_LETTERS = re.compile(
    r"[A-Z](?<!\w[A-Z])(?:[A-Z]{5}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z]"  # IT codice fiscale
    r"|(?<=[XYZ])-?\d{7}-?[A-Z])\b"  # ES NIE
    r"|[xyz](?<![\w][xyz])-?\d{7}-?[a-z]\b"  # ES NIE typed in lower case
)
_STRONG_MODULES = ("it.codicefiscale", "es.dni", "es.nie", "fi.hetu", "se.personnummer",
                   "dk.cpr", "fr.nir")  # fmt: skip
_NATIONAL_NUMERIC = re.compile(r"\d(?<![\w.\-]\d)(?:[ .\-]?\d){7,11}(?![\w]|[.\-]\d)")
_ID_MODULES = ("nl.bsn", "pl.pesel", "be.nn", "at.vnr", "de.idnr", "dk.cpr", "ie.pps",
               "pt.nif", "es.dni", "fr.nir", "se.personnummer", "no.fodselsnummer")  # fmt: skip
_ID_CUE = re.compile(
    r"national id|id number|id no|identity|identification|citizen|personal (?:id|number|code)|"
    r"\bbsn\b|burgerservicenummer|pesel|steuer|idnr|identifikationsnummer|\bnir\b|sécurité sociale|"
    r"securite sociale|insee|rijksregister|numéro national|sozialversicherung|\bsvnr|\bvnr\b|"
    r"\bdni\b|\bnie\b|\bnif\b|codice fiscale|personnummer|hetu|henkilötunnus|\bcpr\b|\bpps\b|"
    r"fødselsnummer|fodselsnummer|tax id|passport|\bpnr\b|id code|id-nr"
)


_ID_CUE_WORDS = (
    "id number", "id no", "id:", "tax id", "bsn", "pesel", "steuer", "nir", "sécurité", "securite", "insee", "rijksregister",
    "national", "sozialvers", "vnr", "dni", "nie", "nif", "fiscale", "personnummer", "hetu",
    "henkilö", "cpr", "pps", "fødsels", "fodsels", "tax", "passport", "citizen", "identi",
    "idnr", "pnr", "id code", "id-nr",
)  # fmt: skip


_HETU_SHAPE = re.compile(r"\d{6}[\-+A-FU-Y]\d{3}[0-9A-Y]")
_DNI_SHAPE = re.compile(r"\d{7,8}-?[A-Za-z]")


def _national_strong(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group().replace(" ", "")
    if _NEGATIVE_CUE.search(context_before(text, match.start(), 14)):
        return None  # "SKU 311290-1234", "order 131052-308T"
    if _HETU_SHAPE.fullmatch(value) and hetu_is_valid(value):
        return match.start(), match.end(), 0.9
    if _DNI_SHAPE.fullmatch(value):
        value = value.replace("-", "").upper().zfill(9)
    elif value[:1] in "xyz":
        value = value.upper()
    if stdnum_match(value, _STRONG_MODULES) is None:
        return None
    return match.start(), match.end(), 0.9


#: NHS numbers are written ``943 476 5919`` or ``943-476-5919``; a bare run needs a cue.
_NHS = re.compile(r"\d(?<![\w.\-]\d)\d{2}([ \-]?)\d{3}\1\d{4}(?![\w\-]|\.\d)")
_NHS_CUE = re.compile(r"nhs|health service|national health")


def _nhs(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if not nhs_is_valid(digits_of(match.group())):
        return None
    if _NHS_CUE.search(context_before(text, match.start(), 40)):
        return match.start(), match.end(), 0.9
    return (match.start(), match.end(), 0.6) if match.group(1) else None


#: ``YYYYMMDDNNNC``: a date, a serial and a Luhn digit; specific enough to take without a cue.
_SE_LONG = re.compile(r"(?<![\w.\-])(?:19|20)\d{10}(?![\w]|[.\-]\d)")


def _se_long(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if stdnum_match(match.group(), ("se.personnummer",)) is None:
        return None
    cue = _ID_CUE.search(context_before(text, match.start(), 40))
    return match.start(), match.end(), 0.9 if cue else 0.6


def _national_numeric(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if not _ID_CUE.search(context_before(text, match.start(), 40)):
        return None
    value = digits_of(match.group())
    score = 0.9 if stdnum_match(value, _ID_MODULES) else 0.55
    return match.start(), match.end(), score


# --- network ----------------------------------------------------------------------------------
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?![\w]|\.\d)")
_IPV6_GATE = re.compile(r"[0-9a-fA-F]:[0-9a-fA-F]{0,4}:|::[0-9a-fA-F]")
_IPV6 = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}"
    r"(?:(?<=:)\d{1,3}(?:\.\d{1,3}){3})?(?:%\w+)?(?![\w:]|\.\d)"
)


_VERSION_BEFORE = re.compile(r"(?:\bv|\bversion:?|\bver\.?|\brelease)[ \t]*$")


def _ip(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group().split("%")[0]
    if not ip_is_valid(value):
        return None
    if ":" in value and value.count(":") < 7 and "::" not in value:
        return None
    if _VERSION_BEFORE.search(context_before(text, match.start(), 12)):
        return None
    return match.start(), match.end(), 0.85


# --- dates of birth (context only) ------------------------------------------------------------
_MONTH = (
    r"(?:jan(?:uary|uar|vier|uari)?|feb(?:ruary|ruar|ruari)?|f[ée]vr(?:ier)?|mar(?:ch|s|zo)?|"
    r"m[äa]rz|maart|apr(?:il|ile)?|avr(?:il)?|abr(?:il)?|may|mai|mei|mayo|maggio|jun(?:e|i|io)?|"
    r"juin|giugno|jul(?:y|i|io)?|juil(?:let)?|luglio|aug(?:ust|ustus)?|ao[uû]t|ago(?:sto)?|"
    r"sep(?:t(?:ember|iembre|embre)?)?|sett(?:embre)?|oct(?:ober|obre|ubre)?|okt(?:ober)?|"
    r"ott(?:obre)?|nov(?:ember|embre|iembre)?|dec(?:ember)?|dez(?:ember)?|d[ée]c(?:embre)?|"
    r"dic(?:iembre|embre)?)\.?"
)
_DATE = (
    rf"\d{{1,2}}[\-/. ]{_MONTH}[\-/. ]?(?:\d{{4}}|\d{{2}})(?!\d)|{_MONTH}[\-/ ]\d{{1,2}}[\-/, ]+\d{{4}}"
    rf"|\d{{4}}[\-/ ]{_MONTH}[\-/ ]\d{{1,2}}"
    r"|\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.](?:\d{4}|\d{2})|\d{8}"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?[ \t]+(?:of[ \t]+|de[ \t]+)?{_MONTH},?[ \t]+(?:de[ \t]+)?\d{{4}}"
    rf"|{_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}"
    rf"|(?:the[ \t]+)?\d{{1,2}}(?:st|nd|rd|th)[ \t]+of[ \t]+{_MONTH},?[ \t]+\d{{4}}"
    rf"|{_MONTH},?[ \t]+\d{{4}}"
)
_DOB_CUE = (
    r"d\.?o\.?b\.?|date[ _\-]*of[ _\-]*birth|birth[ _\-]*date|birthdate|birthday|"
    r"born(?:[ \t]+on)?|b\.|geboren(?:[ \t]+am|[ \t]+op)?|geburtsdatum|geb\.|n[ée]e?[ \t]+le|"
    r"date[ \t]+de[ \t]+naissance|fecha[ \t]+de[ \t]+nacimiento|nacid[oa][ \t]+el|"
    r"data[ \t]+di[ \t]+nascita|nat[oa][ \t]+il|geboortedatum|fec\.?[ \t]*nac\.?"
)
_DOB = re.compile(
    rf"(?i)(?<![\w])(?:{_DOB_CUE})"
    rf"[\s:=\"'\-]{{0,6}}(?:\([^)\n]{{0,16}}\)[\s:=\"'\-]{{0,4}})?"
    rf"(?:(?:is|was|on|am|le|el|il|op|listed as|recorded as|given as|of)[ \t]+){{0,2}}({_DATE})(?!\d)"
)

# --- medical record numbers -------------------------------------------------------------------
MRN_PATTERN = (
    r"(?i)(?<![\w])(?:MRN|medical[ \t]+record(?:[ \t]+(?:number|no\.?|#))?|patient[ \t]+(?:id|number|no\.?)|"
    r"chart[ \t]+(?:number|no\.?|#)|hospital[ \t]+(?:number|no\.?)|NHS[ \t]+(?:number|no\.?)|"
    r"record[ \t]+(?:number|no\.?))[\"']?[ \t]*[:#=]?[ \t]*[\"']?(?:is[ \t]+)?"
    r"([A-Z]{0,4}[\-/]?\d[\d\- ]{3,12}\d)"
)

# --- phones -----------------------------------------------------------------------------------
_PHONE = re.compile(
    r"[+(\d](?<![\w+./\-:].)[\d() .\-/]{4,22}\d"
    r"(?:[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6})?(?![\w\-/]|\.\d)"
)
_PHONE_CUE = re.compile(
    r"tel|phone|call|mobile|cell|fax|ring|text me|whatsapp|sms|reach|contact|dial|handy|"
    r"téléphone|tél|teléfono|telefono|móvil|movil|cellulare|portable|numéro|nummer|número|numero"
)
_DATE_LIKE = re.compile(r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.]\d{2,4}")
_EXT = re.compile(r"[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6}$")


_DECIMAL_OR_SSN = re.compile(r"\d+\.\d+|\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}")
_NANP = re.compile(r"(?:\+?1[ .\-]?)?\(?[2-9]\d{2}\)?[ .\-]?[2-9]\d{2}[ .\-]\d{4}")
_SEPARATED = re.compile(r"\d[ .\-/]\(?\d|\d\)")
_IBAN_LEFT = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]+[A-Z0-9]{3,4})*[ ]+\Z")
_ACCOUNT_GROUPS = re.compile(r"\d{4}(?: \d{4}){2,}(?: \d{1,4})?")
_DATE_SERIAL = re.compile(r"\d{6}(?:\d{2})?-\d{4}")


def _country_code_ok(digits: str) -> bool:
    from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

    return any(int(digits[:size]) in COUNTRY_CODE_TO_REGION_CODE for size in (1, 2, 3))


def _phone(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group()
    if _DATE_LIKE.fullmatch(value) or (value.count(".") == 3 and "(" not in value):
        return None
    core = _EXT.sub("", value).strip()
    digits = digits_of(core)
    if not 7 <= len(digits) <= 15 or core.count("(") != core.count(")"):
        return None
    if _DECIMAL_OR_SSN.fullmatch(core):
        return None
    context = context_before(text, match.start(), 32)
    if "." in core and "ip" in context[-12:]:
        return None  # "ip: 192.168.0" is a truncated address
    if _IBAN_LEFT.search(text, max(0, match.start() - 40), match.start()):
        return None  # the tail of an IBAN-shaped string (valid or not), not a phone number
    if _NEGATIVE_CUE.search(context[-14:]):
        return None
    cue = 0.1 if _PHONE_CUE.search(context) else 0.0
    international = core.startswith(("+", "00"))
    if international:
        national = digits[2:] if core.startswith("00") else digits
        score = 0.85 if len(digits) >= 8 and _country_code_ok(national) else 0.0
    elif _NANP.fullmatch(core):
        score = 0.8
    elif core.startswith(("0", "(0")) and len(digits) >= 9 and _SEPARATED.search(core):
        score = 0.75
    elif _ACCOUNT_GROUPS.fullmatch(core) or _DATE_SERIAL.fullmatch(core):
        score = 0.6 if cue else 0.0  # "0123 4567 8901", "311290-1234": account or id shapes
    elif cue:
        score = 0.7 if _SEPARATED.search(core) else 0.6
    elif _SEPARATED.search(core):
        lib = phone_score(core)  # slow path: libphonenumber, for odd shapes without a cue
        score = 0.75 if lib >= 1.0 else 0.55 if lib else 0.0
    else:
        return None  # a bare digit run without a phone cue is an id, amount or order number
    if not score:
        return (match.start(), match.end(), 0.6) if cue else None
    return match.start(), match.end(), min(0.95, score + cue)


def _medical(match: re.Match[str], text: str) -> tuple[int, int, float]:
    return match.start(1), match.end(1), 0.9


def _dob(match: re.Match[str], text: str) -> tuple[int, int, float]:
    return match.start(1), match.end(1), 0.9


_DOB_ANCHOR = re.compile(_DOB_CUE)
_MRN_ANCHOR = re.compile(r"mrn|medical|patient|chart|hospital|nhs|record")
_UNUSED = re.compile(r"(?!)")

RULES: tuple[Rule, ...] = (
    EmailRule("EMAIL", "email.regex", _UNUSED, _span()),
    SignatureRule("SECRET", "secret.signature", _UNUSED, _span()),
    Rule("SECRET", "secret.keyed", KEYED_SECRET, keyed_secret, anchor=SECRET_ANCHOR,
         gate=("pass", "pwd", "secret", "api", "access", "auth", "refresh", "private", "token",
               "key", "bearer", "aws", "client")),
    Rule("URL_CREDENTIAL", "url.credential", URL_CRED, url_cred, needs=("=", "://")),
    Rule("SECRET", "secret.url_path", PATH_TOKEN, path_token, needs=("/",)),
    Rule("SECRET", "secret.near_key", NEAR_KEY, near_key, anchor=NEAR_KEY_ANCHOR,
         gate=("key", "token", "secret", "password", "passphrase", "credential", "signature",
               "auth")),
    Rule("CREDIT_CARD", "card.luhn", _CARD, _card, needs=("digit",)),
    Rule("IBAN", "iban.mod97", _IBAN, _iban, needs=("digit",)),
    Rule("US_SSN", "ssn.structure", _SSN, _ssn, needs=("digit",)),
    Rule("UK_NINO", "nino.structure", _NINO, _nino, needs=("digit",)),
    Rule("NATIONAL_ID", "nhs.mod11", _NHS, _nhs, needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.stdnum", _SE_LONG, _se_long, needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.stdnum", _NATIONAL_STRONG, _national_strong, needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.stdnum", _NATIONAL_LETTERS, _national_strong,
         needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.context", _NATIONAL_NUMERIC, _national_numeric,
         needs=("digit",), gate=_ID_CUE_WORDS),
    Rule("IP_ADDRESS", "ip.ipv4", _IPV4, _ip, needs=(".",)),
    Rule("IP_ADDRESS", "ip.ipv6", _IPV6, _ip, needs=("::", ":"), anchor_gate=_IPV6_GATE),
    Rule("DATE_OF_BIRTH", "dob.context", _DOB, _dob, anchor=_DOB_ANCHOR, needs=("digit",)),
    Rule("MEDICAL_RECORD_NUMBER", "mrn.pattern", re.compile(MRN_PATTERN), _medical,
         anchor=_MRN_ANCHOR, needs=("digit",),
         gate=("mrn", "medical", "patient", "chart", "hospital", "nhs", "record")),
    Rule("PHONE", "phone.libphonenumber", _PHONE, _phone, needs=("digit",)),
)  # fmt: skip
