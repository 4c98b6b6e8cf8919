"""Offline person-name and street-address detection: context cues, gazetteers, street grammars.

No model is downloaded: names are found through titles and cue phrases ("my name is", "Dear",
"Patient:"), through small first-name / surname gazetteers shipped in ``data/`` (several locales)
and through ``SURNAME, Given`` forms; addresses through house-number + street-type grammars for
English, German, Dutch, French, Spanish, Italian and Portuguese.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources

from privacy_finetuner.guard._model import Finding

__all__ = ["address_findings", "first_names", "name_findings", "surnames"]

_UP = "A-ZÀ-ÖØ-Þ"
_LO = "a-zà-öø-ÿß"
#: One capitalised word ("Anne", "O'Neil", "Bowen-Simpson", "Müller").
CAP = rf"[{_UP}][{_LO}]+(?:['’\-][{_UP}{_LO}][{_LO}]+)?"
_PARTICLE = r"(?:van der|van den|van de|von der|de la|de los|van|von|de|der|den|del|della|da|di|du|dos|das|la|le|ten|ter|bin|al)"
#: A person-name-shaped sequence: one to four capitalised words with optional particles.
NAME_SEQ = rf"{CAP}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{CAP}){{0,3}}"

_TITLE_RE = re.compile(
    r"(?<![\w.])(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra|Srta|Sig|Sig\.ra"
    r"|Dott|Dott\.ssa|Dhr|Mevr|Rev|Fr|Capt|Col|Lt|Sgt)\.?[ \t]+(" + NAME_SEQ + ")"
    r"|(?<![\w.])M\.[ \t]+(" + NAME_SEQ + ")"
)
_STRONG_CUES = (
    r"my name is|my name's|name is|full name|patient name|patient|pt\.?|customer|client|"
    r"dear|signed|sincerely|regards|best regards|kind regards|cheers|yours|contact person|"
    r"ich heiße|mein name ist|je m'appelle|je suis|me llamo|mi nombre es|mi chiamo|"
    r"mijn naam is|nome|nom|nombre|naam|name|attn|attention|recipient|sender|passenger|guest|"
    r"employee|applicant|tenant|account holder|cardholder|holder|author|spoke with|spoke to|"
    r"talked to|met with|referred by|seen by|assigned to|reported by|married to"
)
_WEAK_CUES = r"i am|i'm|this is|call me|hi|hello|hey|thanks|thank you|from|to|cc|with|ask|by"
_CUE_RE = re.compile(
    rf"(?<![\w])(?i:({_STRONG_CUES})|({_WEAK_CUES}))[ \t]*[:,\-]?[ \t]*\n?[ \t]*({NAME_SEQ})"
)
_SEQ_RE = re.compile(rf"(?<![\w])({NAME_SEQ})")
_UPPER_SEQ_RE = re.compile(rf"(?<![\w])([{_UP}]{{2,}}(?:[ \t]+[{_UP}]{{2,}}){{1,3}})(?![\w])")
_SURNAME_FIRST_RE = re.compile(rf"(?<![\w])([{_UP}][{_UP}{_LO}'’\-]+),[ \t]+({CAP})(?![\w])")

#: Capitalised words that start sentences or headings and are never names on their own.
_STOP = frozenset(
    """
    the a an and or but if in on at to of for from by with this that these those it its is are
    was were be been i we you he she they my your our their his her me us them please thanks
    thank hello hi hey dear yes no ok okay not also then there here when where what which who
    how why monday tuesday wednesday thursday friday saturday sunday january february march
    april may june july august september october november december street road avenue city
    order invoice ticket account customer patient doctor team support user assistant system
    error warning info debug note notes subject re fwd mr mrs ms dr prof new old date time
    total amount status tool function result results name email phone address card number
    """.split()
)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Casefolded first names of the shipped gazetteer."""
    return _load("first_names.txt")


@lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    """Casefolded surnames of the shipped gazetteer."""
    return _load("surnames.txt")


def _load(filename: str) -> frozenset[str]:
    text = resources.files("privacy_finetuner.guard").joinpath("data").joinpath(filename).read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop trailing stop words from a name span ("John Smith Street" stays for the address)."""
    words = text[start:end].split()
    while len(words) > 1 and words[-1].casefold() in _STOP:
        words.pop()
    return start, start + len(" ".join(words)) if words else end


def _gazetteer_score(words: list[str]) -> float:
    first, last = first_names(), surnames()
    head, tail = words[0].casefold(), words[-1].casefold()
    if head in _STOP:
        return 0.0
    if len(words) == 1:
        return 0.45 if head in first else 0.0
    if head in first and (tail in last or tail in first):
        return 0.85
    if head in first or tail in last:
        return 0.65
    if any(word.casefold() in last for word in words[1:-1]):
        return 0.55
    return 0.0


def name_findings(text: str) -> Iterator[Finding]:
    """PERSON findings from titles, cue phrases, gazetteer sequences and SURNAME, Given forms."""
    for match in _TITLE_RE.finditer(text):
        group = 1 if match.group(1) else 2
        start, end = _trim(text, match.start(group), match.end(group))
        yield Finding(start, end, "PERSON", 0.85, "name.title")
    for match in _CUE_RE.finditer(text):
        start, end = _trim(text, match.start(3), match.end(3))
        words = text[start:end].split()
        if words[0].casefold() in _STOP:
            continue
        gaz = _gazetteer_score(words)
        if match.group(1):
            score = max(0.8, gaz)
        else:
            score = max(gaz, 0.55 if len(words) > 1 else 0.0)
        if score:
            yield Finding(start, end, "PERSON", min(0.95, score + 0.05), "name.context")
    for match in _SEQ_RE.finditer(text):
        words = match.group(1).split()
        score = _gazetteer_score(words)
        if len(words) == 1 and score and _sentence_start(text, match.start()):
            score = 0.35
        if score:
            start, end = _trim(text, match.start(1), match.end(1))
            yield Finding(start, end, "PERSON", score, "name.gazetteer")
    for match in _UPPER_SEQ_RE.finditer(text):
        words = match.group(1).split()
        if words[0].casefold() in first_names() and words[-1].casefold() in surnames():
            yield Finding(match.start(1), match.end(1), "PERSON", 0.75, "name.gazetteer")
    for match in _SURNAME_FIRST_RE.finditer(text):
        if match.group(1).casefold() in surnames() and match.group(2).casefold() in first_names():
            yield Finding(match.start(1), match.end(2), "PERSON", 0.8, "name.gazetteer")


def _sentence_start(text: str, index: int) -> bool:
    before = text[max(0, index - 3) : index].rstrip(" \t\"'(")
    return not before or before[-1] in ".!?:\n>"


_EN_SUFFIX = (
    "Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|"
    "Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Crescent|Close|Mews|Row|"
    "Walk|Grove|Gardens|Hill|Hills|Alley|Branch|Bridge|Brook|Brooks|Burg|Burgs|Bypass|Camp|"
    "Canyon|Cape|Causeway|Center|Centers|Circles|Cliff|Cliffs|Club|Common|Corner|Corners|Course|"
    "Courts|Cove|Coves|Creek|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Drives|Estate|"
    "Estates|Expressway|Extension|Extensions|Fall|Falls|Ferry|Field|Fields|Flat|Flats|Ford|"
    "Fords|Forest|Forge|Forges|Fork|Forks|Fort|Freeway|Garden|Gateway|Glen|Glens|Green|Greens|"
    "Groves|Harbor|Harbors|Haven|Heights|Hollow|Inlet|Island|Islands|Isle|Junction|Junctions|"
    "Key|Keys|Knoll|Knolls|Lake|Lakes|Land|Landing|Light|Lights|Loaf|Lock|Locks|Lodge|Loop|Mall|"
    "Manor|Manors|Meadow|Meadows|Mill|Mills|Mission|Motorway|Mount|Mountain|Mountains|Neck|"
    "Orchard|Oval|Overpass|Park|Parks|Parkways|Pass|Passage|Path|Pike|Pine|Pines|Plain|Plains|"
    "Plaza|Point|Points|Port|Ports|Prairie|Radial|Ramp|Ranch|Rapid|Rapids|Rest|Ridge|Ridges|"
    "River|Roads|Route|Rue|Run|Shoal|Shoals|Shore|Shores|Skyway|Spring|Springs|Spur|Spurs|"
    "Squares|Station|Stravenue|Stream|Streets|Summit|Throughway|Trace|Track|Trafficway|Tunnel|"
    "Turnpike|Underpass|Union|Unions|Valley|Valleys|Via|Viaduct|View|Views|Village|Villages|"
    "Ville|Vista|Walks|Wall|Ways|Well|Wells|Marg|Nagar|Chowk|Ganj|Path|Colony"
)
_UNIT = r"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|#)\.?[ \t]*#?[\w\-]+)?"
_EN_RE = re.compile(
    r"(?<![\w.])(?:(?:Studio|Flat|Apartment|Apt\.?|Unit|Suite|H\.?[ ]?No\.?)[ \t]*[\w/\-]+,?[ \t]+)?"
    rf"\d{{1,6}}[A-Za-z]?(?:[/\-]\d{{1,4}})?,?[ \t]+(?:{CAP}[ \t]+){{0,3}}(?:{_EN_SUFFIX})\.?(?![\w]){_UNIT}"
)
_EN_INDIA_RE = re.compile(rf"H\.?[ ]?No\.?[ \t]*\d[\w/\-]*,?[ \t]+{CAP}(?:[ \t]+{CAP}){{0,3}}")
_COMPOUND = (
    "straße|strasse|str\\.|weg|platz|allee|gasse|ring|damm|ufer|steig|pfad|chaussee|markt|"
    "straat|laan|plein|singel|gracht|kade|dijk|hof|pad|dreef|steeg|baan|boulevard|plantsoen|park"
)
_COMPOUND_RE = re.compile(
    rf"(?<![\w])(?:[{_UP}][\w'’]*-)*(?:[{_UP}][{_LO}'’]*?(?:{_COMPOUND})|"
    r"Straße|Strasse|Weg|Platz|Allee|Gasse|Ring|Damm|Ufer|Steig|Pfad|Markt)"
    r"[ \t]+\d{1,4}[a-z]?(?:[ \t]?[/\-][ \t]?\d{1,4}[a-z]?)?(?![\w])"
)
_ROMANCE_TYPES = (
    "Rue|Avenue|Boulevard|Bd|Chemin|Impasse|Allée|Quai|Route|Place|Cours|Passage|Square|Voie|"
    "Calle|C/|Avenida|Avda\\.|Paseo|Plaza|Rambla|Pasadizo|Vial|Camino|Ronda|Alameda|Cañada|"
    "Glorieta|Pasaje|Travesía|Callejón|Urbanización|Acceso|Cuesta|Carretera|Via|Viale|Piazza|"
    "Piazzale|Corso|Borgo|Contrada|Canale|Stretto|Vicolo|Largo|Incrocio|Rotonda|Strada|"
    "Lungomare|Viottolo|Rua|Praça|Travessa|Morro|Núcleo|Pátio|Conjunto|Feira|Favela|Rodovia|"
    "Estrada|Ladeira|Vila|Quadra|Setor|Jardim|Loteamento|Residencial|Chácara|Condomínio|Vereda"
)
_LINK = r"(?:(?:de la|de las|de los|de|del|di|della|delle|dei|degli|da|do|dos|das|du|des|le|la|les)[ \t]+|l'|d')"
_ROMANCE_RE = re.compile(
    rf"(?<![\w])(?:(\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+)(?i:{_ROMANCE_TYPES})|(?:{_ROMANCE_TYPES}))"
    rf"[ \t]+{_LINK}*{CAP}(?:[ \t\-]+{_LINK}?{CAP}){{0,3}}"
    r"(,?[ \t]+(?:n\.?[ºo°]?[ \t]*)?\d{1,5}[A-Za-z]?(?:[/\-]\d{1,4})?)?"
    r"(?:[ \t]+(?:Apt\.|Apto\.?|Piso|Puerta|Appartamento|Interno|Scala|Bloco|Casa)[ \t]*\w+)?"
)


def address_findings(text: str) -> Iterator[Finding]:
    """STREET_ADDRESS findings: house number + street for the supported languages."""
    for pattern in (_EN_RE, _EN_INDIA_RE, _COMPOUND_RE):
        for match in pattern.finditer(text):
            yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.85, "address.grammar")
    for match in _ROMANCE_RE.finditer(text):
        numbered = bool(match.group(1) or match.group(2))
        score = 0.85 if numbered else 0.55
        yield Finding(match.start(), match.end(), "STREET_ADDRESS", score, "address.grammar")
