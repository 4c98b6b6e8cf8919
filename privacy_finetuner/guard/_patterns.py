"""Regex + validator rules for the structured entity types (everything except names/addresses).

Each rule is one compiled regular expression and a small function that validates a match (Luhn,
mod-97, libphonenumber, python-stdnum, context words) and scores it. Rules whose pre-filter
(a cheap ``in`` test on the whole text) fails are skipped, so plain prose costs a few regex scans.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from privacy_finetuner.guard._model import Finding
from privacy_finetuner.guard._validators import (
    card_brand,
    digits_of,
    iban_is_valid,
    ip_is_valid,
    luhn_ok,
    nino_score,
    phone_score,
    ssn_is_valid,
    stdnum_match,
)

__all__ = ["RULES", "Rule", "context_before"]

Scorer = Callable[[re.Match[str], str], "tuple[int, int, float] | None"]


@dataclass(frozen=True)
class Rule:
    """One regex rule: entity type, detector name, pattern, scorer and a cheap pre-filter."""

    entity: str
    name: str
    pattern: re.Pattern[str]
    scorer: Scorer
    needs: tuple[str, ...] = ()  # skip the rule unless the text has one of these ("digit")

    def findings(self, text: str) -> Iterator[Finding]:
        for match in self.pattern.finditer(text):
            result = self.scorer(match, text)
            if result is not None:
                yield Finding(result[0], result[1], self.entity, result[2], self.name)


def context_before(text: str, start: int, width: int = 48) -> str:
    """Lower-cased text in the ``width`` characters before ``start`` (for cue words)."""
    return text[max(0, start - width) : start].lower()


def _span(group: int = 0, score: float = 0.95) -> Scorer:
    def scorer(match: re.Match[str], text: str) -> tuple[int, int, float]:
        return match.start(group), match.end(group), score

    return scorer


_NEGATIVE_CUE = re.compile(
    r"(?:order|invoice|inv|ref|reference|ticket|tracking|transaction|txn|po|sku|item|case|"
    r"build|version|serial|isbn|batch|lot|job|run|request|req|no\.|#)\W{0,4}$"
)

# --- e-mail -----------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.+\-])[\w.+\-]{1,64}@[\w\-]+(?:\.[\w\-]+)*\.[A-Za-z]{2,24}(?![\w\-])"
    r"|(?<![\w.])[\w.+\-]{1,64}[ \t]?[\[(\{]at[\])\}][ \t]?[\w\-]+(?:[ \t]?[\[(\{]dot[\])\}][ \t]?[\w\-]+)+"
    r"|(?<![\w.])[\w.+\-]{2,64} at [\w\-]+ dot (?:com|org|net|edu|gov|io|de|fr|es|it|nl|co\.uk|uk)\b"
)

# --- secrets and credentials ------------------------------------------------------------------
_SECRET = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|AIDA|AROA|AGPA|ANPA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|\bgh[pousr]_[A-Za-z0-9]{36,255}\b|\bgithub_pat_[A-Za-z0-9_]{22,255}\b"
    r"|\bxox[abprse]-[A-Za-z0-9\-]{10,255}"
    r"|https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]+"
    r"|\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,255}\b"
    r"|\bsk-(?:proj-|ant-(?:api\d\d-)?|svcacct-)?[A-Za-z0-9_\-]{20,255}"
    r"|\bAIza[0-9A-Za-z_\-]{35}\b|\bglpat-[A-Za-z0-9_\-]{20,}\b|\bnpm_[A-Za-z0-9]{36}\b"
    r"|\bhf_[A-Za-z0-9]{30,}\b|\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b"
    r"|\beyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{8,}"
    r"|-----BEGIN[A-Z ]{0,30}PRIVATE KEY( BLOCK)?-----[\s\S]*?-----END[A-Z ]{0,30}PRIVATE KEY( BLOCK)?-----"
)
_KEYED_SECRET = re.compile(
    r"(?i)(?<![\w])(?:password|passwd|passphrase|pwd|pass|secret|client[_\-]?secret|api[_\-]?key|"
    r"apikey|access[_\-]?key|secret[_\-]?key|access[_\-]?token|auth[_\-]?token|refresh[_\-]?token|"
    r"private[_\-]?key|token|aws_secret_access_key|x-api-key)[\"']?[ \t]*(?:[:=]|=>|[ \t]is)[ \t]*"
    r"[\"']?([^\s\"',;{}()<>\[\]]{4,200})"
    r"|(?i:\bbearer)[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)"
)
_NOT_SECRET = frozenset(
    {"required", "null", "none", "true", "false", "redacted", "hidden", "missing", "invalid",
     "expired", "changeme?", "******", "********", "xxxx", "empty", "undefined", "string"}
)  # fmt: skip


def _keyed_secret(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    group = 1 if match.group(1) else 2
    value = match.group(group)
    if value.lower() in _NOT_SECRET or value.startswith("[") or set(value) <= {"*", "x", "X"}:
        return None
    return match.start(group), match.end(group), 0.8


_URL_CRED = re.compile(
    r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://([^\s:/?#@\"']+:[^\s/?#@\"']+)@"
    r"|[?&](?:access_token|token|api_key|apikey|key|password|pwd|secret|sig|signature|auth|"
    r"session|sessionid|client_secret|code|X-Amz-Signature|X-Amz-Credential)=([^&\s#\"'<>]{6,})"
)


def _url_cred(match: re.Match[str], text: str) -> tuple[int, int, float]:
    group = 1 if match.group(1) else 2
    return match.start(group), match.end(group), 0.9


# --- payment cards ----------------------------------------------------------------------------
_CARD = re.compile(r"(?<![\d.\-])\d(?:[ \-]?\d){11,18}(?![\d])")
_CARD_CUE = re.compile(r"card|visa|master|amex|credit|debit|cc|pan|payment|kreditkarte|carte|tarjeta")


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
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")


def _iban(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group()
    if iban_is_valid(value):
        return match.start(), match.end(), 0.95
    parts = value.split(" ")  # the greedy match may have swallowed a following word
    while len(parts) > 3:
        parts.pop()
        candidate = " ".join(parts)
        if iban_is_valid(candidate):
            return match.start(), match.start() + len(candidate), 0.95
    return None


# --- national identifiers ---------------------------------------------------------------------
_SSN = re.compile(r"(?<![\d\-])(\d{3})([\- ]?)(\d{2})\2(\d{4})(?![\d\-])")
_SSN_CUE = re.compile(r"ssn|social security|soc\.? sec|tin\b|taxpayer")


def _ssn(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if not ssn_is_valid(match.group(1), match.group(3), match.group(4)):
        return None
    cue = bool(_SSN_CUE.search(context_before(text, match.start(), 24)))
    if not match.group(2):
        return (match.start(), match.end(), 0.85) if cue else None
    if match.group(2) == " " and not cue:
        return None
    return match.start(), match.end(), 0.95 if cue else 0.85


_NINO = re.compile(r"\b([A-Z]{2})[ ]?\d{2}[ ]?\d{2}[ ]?\d{2}[ ]?[A-D]\b")


def _nino(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    score = nino_score(match.group(1))
    return (match.start(), match.end(), score) if score else None


_NATIONAL_STRONG = re.compile(
    r"\b[A-Z]{6}\d{2}[A-EHLMPRST]\d{2}[A-Z]\d{3}[A-Z]\b"  # IT codice fiscale
    r"|\b[XYZ]?-?\d{7,8}-?[A-Z]\b"  # ES DNI / NIE
    r"|\b\d{6}[\-+A-FU-Y]\d{3}[0-9A-Y]\b"  # FI HETU
    r"|\b(?:19|20)?\d{6}[\-+]\d{4}\b"  # SE personnummer, DK CPR
    r"|\b[12][ ]?\d{2}[ ]?\d{2}[ ]?(?:\d{2}|2[AB])[ ]?\d{3}[ ]?\d{3}[ ]?\d{2}\b"  # FR NIR
)
_STRONG_MODULES = ("it.codicefiscale", "es.dni", "es.nie", "fi.hetu", "se.personnummer",
                   "dk.cpr", "fr.nir")  # fmt: skip
_NATIONAL_NUMERIC = re.compile(r"(?<![\w.\-])\d(?:[ .\-]?\d){7,11}(?![\w]|[.\-]\d)")
_ID_MODULES = ("nl.bsn", "pl.pesel", "be.nn", "at.vnr", "de.idnr", "dk.cpr", "ie.pps",
               "pt.nif", "es.dni", "fr.nir", "se.personnummer", "no.fodselsnummer")  # fmt: skip
_ID_CUE = re.compile(
    r"national id|id number|id no|identity|identification|citizen|personal (?:id|number|code)|"
    r"\bbsn\b|burgerservicenummer|pesel|steuer|idnr|identifikationsnummer|\bnir\b|sécurité sociale|"
    r"securite sociale|insee|rijksregister|numéro national|sozialversicherung|\bsvnr|\bvnr\b|"
    r"\bdni\b|\bnie\b|\bnif\b|codice fiscale|personnummer|hetu|henkilötunnus|\bcpr\b|\bpps\b|"
    r"fødselsnummer|fodselsnummer|tax id|passport"
)


def _national_strong(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group().replace(" ", "")
    if stdnum_match(value, _STRONG_MODULES) is None:
        return None
    return match.start(), match.end(), 0.9


def _national_numeric(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    if not _ID_CUE.search(context_before(text, match.start(), 40)):
        return None
    value = digits_of(match.group())
    score = 0.9 if stdnum_match(value, _ID_MODULES) else 0.55
    return match.start(), match.end(), score


# --- network ----------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?:%\w+)?(?![\w:])")


def _ip(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group().split("%")[0]
    if not ip_is_valid(value):
        return None
    if ":" in value and value.count(":") < 7 and "::" not in value:
        return None
    context = context_before(text, match.start(), 12)
    if context.endswith(("v", "version ", "version: ", "ver ")):
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
    r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.](?:\d{4}|\d{2})"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|º)?\.?[ \t]+(?:of[ \t]+|de[ \t]+)?{_MONTH},?[ \t]+(?:de[ \t]+)?\d{{4}}"
    rf"|{_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}"
)
_DOB = re.compile(
    r"(?i)(?<![\w])(?:d\.?o\.?b\.?|date[ _\-]*of[ _\-]*birth|birth[ _\-]*date|birthdate|birthday|"
    r"born(?:[ \t]+on)?|b\.|geboren(?:[ \t]+am|[ \t]+op)?|geburtsdatum|geb\.|n[ée]e?[ \t]+le|"
    r"date[ \t]+de[ \t]+naissance|fecha[ \t]+de[ \t]+nacimiento|nacid[oa][ \t]+el|"
    r"data[ \t]+di[ \t]+nascita|nat[oa][ \t]+il|geboortedatum|fec\.?[ \t]*nac\.?)"
    rf"[\s:=\"'\-]{{0,6}}(?:is[ \t]+|was[ \t]+|on[ \t]+|am[ \t]+|le[ \t]+|el[ \t]+|il[ \t]+|op[ \t]+)?({_DATE})(?!\d)"
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
    r"(?<![\w+./\-])(?:\+|00|\()?\d[\d() .\-/]{4,22}\d"
    r"(?:[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6})?(?![\w\-/]|\.\d)"
)
_PHONE_CUE = re.compile(
    r"tel|phone|call|mobile|cell|fax|ring|text me|whatsapp|sms|reach|contact|dial|handy|"
    r"téléphone|tél|teléfono|telefono|móvil|movil|cellulare|portable|numéro|nummer|número"
)
_DATE_LIKE = re.compile(r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.]\d{2,4}")
_EXT = re.compile(r"[ \t]?(?:x|ext\.?|extension)[ \t]?\d{1,6}$")


def _phone(match: re.Match[str], text: str) -> tuple[int, int, float] | None:
    value = match.group()
    if _DATE_LIKE.fullmatch(value) or value.count(".") == 3 and "(" not in value:
        return None
    core = _EXT.sub("", value)
    digits = digits_of(core)
    if not 7 <= len(digits) <= 15 or core.count("(") != core.count(")"):
        return None
    context = context_before(text, match.start(), 32)
    cue = bool(_PHONE_CUE.search(context))
    if not cue and _NEGATIVE_CUE.search(context):
        return None
    formatted = core[0] in "+(" or core.startswith("00") or bool(re.search(r"\d[ .\-]\d", core))
    lib = phone_score(core)
    if lib >= 1.0:
        score = 0.75 + (0.1 if formatted else 0.0) + (0.1 if cue else 0.0)
    elif lib > 0 and formatted:
        score = 0.55 + (0.25 if cue else 0.0)
    elif cue and len(digits) >= 7:
        score = 0.6
    else:
        return None
    return match.start(), match.end(), score


def _medical(match: re.Match[str], text: str) -> tuple[int, int, float]:
    return match.start(1), match.end(1), 0.9


def _dob(match: re.Match[str], text: str) -> tuple[int, int, float]:
    return match.start(1), match.end(1), 0.9


RULES: tuple[Rule, ...] = (
    Rule("EMAIL", "email.regex", _EMAIL, _span(score=0.95), needs=("@", "at")),
    Rule("SECRET", "secret.signature", _SECRET, _span(score=0.95)),
    Rule("SECRET", "secret.keyed", _KEYED_SECRET, _keyed_secret),
    Rule("URL_CREDENTIAL", "url.credential", _URL_CRED, _url_cred, needs=("=", "@")),
    Rule("CREDIT_CARD", "card.luhn", _CARD, _card, needs=("digit",)),
    Rule("IBAN", "iban.mod97", _IBAN, _iban, needs=("digit",)),
    Rule("US_SSN", "ssn.structure", _SSN, _ssn, needs=("digit",)),
    Rule("UK_NINO", "nino.structure", _NINO, _nino, needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.stdnum", _NATIONAL_STRONG, _national_strong, needs=("digit",)),
    Rule("NATIONAL_ID", "national_id.context", _NATIONAL_NUMERIC, _national_numeric, needs=("digit",)),
    Rule("IP_ADDRESS", "ip.ipv4", _IPV4, _ip, needs=(".",)),
    Rule("IP_ADDRESS", "ip.ipv6", _IPV6, _ip, needs=(":",)),
    Rule("DATE_OF_BIRTH", "dob.context", _DOB, _dob, needs=("digit",)),
    Rule("MEDICAL_RECORD_NUMBER", "mrn.pattern", re.compile(MRN_PATTERN), _medical, needs=("digit",)),
    Rule("PHONE", "phone.libphonenumber", _PHONE, _phone, needs=("digit",)),
)
