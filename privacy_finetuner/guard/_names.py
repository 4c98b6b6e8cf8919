"""Offline person-name and street-address detection: context cues, gazetteers, street grammars.

No model is downloaded: names are found through titles and cue phrases ("my name is", "Dear",
"Patient:"), through small first-name / surname gazetteers shipped in ``data/`` (several locales)
and through ``SURNAME, Given`` forms; addresses through house-number + street-type grammars for
English, German, Dutch, French, Spanish, Italian and Portuguese.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources

from privacy_finetuner.guard._model import Finding

__all__ = [
    "address_block",
    "address_findings",
    "first_names",
    "name_findings",
    "numbered_address_findings",
    "surnames",
    "unnumbered_address_findings",
]


def _words(text: str, sep: str | None = None) -> list[str]:
    """Split a word list written as one string (keeps long lists compact)."""
    return [word.strip() for word in text.split(sep) if word.strip()]


_UP = "A-ZÀ-ÖØ-Þ\u0100-\u017f"
_LO = "a-zà-öø-ÿß\u0100-\u017f"
#: One capitalised word ("Anne", "O'Neil", "Bowen-Simpson", "Müller").
CAP = rf"[{_UP}](?:[{_LO}]+(?:[{_UP}][{_LO}]+)?|(?=['’]))(?:['’\-][{_UP}{_LO}][{_LO}]+)?"
_PARTICLE = (
    r"(?:van der|van den|van de|van 't|von der|von und zu|und zu|de la|de los|van|von|de|der|den|"
    r"del|della|da|di|du|dos|das|la|le|ten|ter|bin|al|en|und|zu|y|'t|'s|d')"
)
#: A person-name-shaped sequence: one to four capitalised words with optional particles.
NAME_SEQ = rf"{CAP}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{CAP}){{0,3}}"

_TITLES = frozenset(_words("""
        mr mrs ms miss mx dr prof sir dame herr frau mme mlle m sr sra srta sig sig.ra dott dott.ssa
        dhr mevr rev fr capt col lt sgt
        """))
_STRONG_CUES = frozenset(
    """my name is|my name's|name is|full name|patient name|patient|pt|customer|client|dear|
    signed|sincerely|regards|best regards|kind regards|cheers|yours|contact person|ich heiße|
    mein name ist|je m'appelle|je suis|me llamo|mi nombre es|mi chiamo|mijn naam is|nome|nom|
    nombre|naam|name|attn|attention|recipient|sender|passenger|guest|employee|applicant|tenant|
    account holder|cardholder|holder|author|spoke with|spoke to|talked to|met with|referred by|
    seen by|assigned to|reported by|married to|contact|name's""".replace("\n", "").split("|")
)
_WEAK_CUES = frozenset(
    _words(
        """
        i am|i'm|this is|call me|hi|hello|hey|thanks|thank you|from|to|cc|with|ask|by
        """,
        "|",
    )
)
_CAP_FIRST = (
    rf"[{_UP}](?<![\w\-'’].)(?:[{_LO}]+(?:[{_UP}][{_LO}]+)?|(?=['’]))"
    rf"(?:['’\-][{_UP}{_LO}][{_LO}]+)?"
)
_SEQ_RE = re.compile(
    rf"{_CAP_FIRST}(?:[ \t]+(?:{_PARTICLE}[ \t]+|[{_UP}]\.?[ \t]+)?{CAP}){{0,3}}(?:[ \t]+(?:II|III|IV|Jr\.?)\b)?"
)
_UPPER_SEQ_RE = re.compile(
    rf"[{_UP}](?<![\w][{_UP}])[{_UP}]+(?:[ \t]+[{_UP}](?:['’]?[{_UP}])+){{1,3}}(?![\w])"
)
_SURNAME_FIRST_RE = re.compile(rf"[{_UP}](?<![\w][{_UP}])[{_UP}{_LO}'’\-]+,[ \t]+{CAP}(?![\w])")

#: Capitalised words that start sentences or headings and are never names on their own.
_STOP = frozenset(_words("""
        the a an and or but if in on at to of for from by with this that these those it its is are
        was were be been i we you he she they my your our their his her me us them please thanks
        thank hello hi hey dear yes no ok okay not also then there here when where what which who
        how why monday tuesday wednesday thursday friday saturday sunday january february march
        april may june july august september october november december street road avenue city order
        invoice ticket account customer patient doctor team support user assistant system error
        warning info debug note notes subject re fwd mr mrs ms dr prof new old date time total
        amount status tool function result results name email phone address card number
        """))


_MONTHS = frozenset(_words("""
        january february march april may june july august september october november december monday
        tuesday wednesday thursday friday saturday sunday
        """))
_TRAILING = _STOP - _MONTHS

#: Capitalised words that may start a sequence before a name ("Dear Anna Smith").
_LEADING = _TRAILING | frozenset(_words("""
        hi hello hey dear thanks cheers regards sincerely patient customer client attn signed
        contact ask call tell email ping
        """))
#: First words of place names ("Port Ashley", "San Valentino"): such sequences are not people.
_PLACE = frozenset(_words("""
        port porto lake west east north south new san santa santo sankt st saint sainte fort mount
        bad villa borgo castel castello monte puerto isla ciudad villanueva nieuw oud groot klein
        upper lower great little old
        """))


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Casefolded first names of the shipped gazetteer (every Faker locale), accents also folded."""
    return _folded(_load("first_names.txt"))


@lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    """Casefolded surnames of the shipped gazetteer, accents also folded."""
    return _folded(_load("surnames.txt"))


@lru_cache(maxsize=1)
def common_names() -> frozenset[str]:
    """Names that are also ordinary English words ("rose", "mark"): alone they need context."""
    return _load("common_names.txt") | _MONTHS | _MONTH_ABBR | _STOP | _PARTICLE_WORDS


@lru_cache(maxsize=1)
def _lower_names() -> frozenset[str]:
    """Names that the lower-case path may take: not a common word in any shipped language."""
    blocked = _load("lower_blocklist.txt") | common_names()
    return frozenset(n for n in first_names() | surnames() if len(n) >= 3 and n not in blocked)


def _load(filename: str) -> frozenset[str]:
    text = (
        resources.files("privacy_finetuner.guard")
        .joinpath("data")
        .joinpath(filename)
        .read_text("utf-8")
    )
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def _fold(word: str) -> str:
    """``word`` without accents ("matěj" -> "matej"): people drop them in chat and logs."""
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _folded(names: frozenset[str]) -> frozenset[str]:
    return names | frozenset(_fold(name) for name in names)


_MONTH_ABBR = frozenset(
    _words("jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun")
)
_PARTICLE_WORDS = frozenset(
    _words("van der den de la los von und zu del della da di du dos das le ten ter bin al en y")
)


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Drop trailing stop words from a name span ("John Smith Street" stays for the address)."""
    words = text[start:end].split()
    while len(words) > 1 and words[-1].casefold() in _TRAILING:
        words.pop()
    return start, start + len(" ".join(words)) if words else end


def _is_initial(word: str) -> bool:
    return len(word.rstrip(".")) == 1


def _gazetteer_score(words: list[str]) -> float:
    """How name-like a capitalised sequence is from the gazetteers alone (0 = not at all).

    A name that is also a common word ("Rose", "Mark", "Bill") scores below the threshold alone
    and needs a cue, a title or a surname beside it.
    """
    first, last, common = first_names(), surnames(), common_names()
    words = [w.casefold().rstrip(".,") for w in words if not _is_initial(w)] or [""]
    head, tail = words[0], words[-1]
    head_first, tail_last = head in first, tail in last
    head_plain, tail_plain = head not in common, tail not in common
    if len(words) == 1:
        if head in _MONTHS or head in _MONTH_ABBR or len(head) < 3:
            return 0.0
        if head_first:
            return 0.6 if head_plain else 0.4
        return 0.5 if tail_last and tail_plain else 0.0
    if head_first and (tail_last or tail in first):
        return 0.85 if head_plain or tail_plain else 0.45
    if head_first and head_plain:
        return 0.7
    if tail_last and tail_plain and head not in _LEADING:
        return 0.6
    if any(word in last for word in words[1:-1]):
        return 0.55
    if len(words) == 2 and head not in common and _SURNAME_SHAPE.search(tail):
        return 0.6
    return 0.0


#: Surname endings of many languages (Szczepańska, Novák­ová, Ivanov, Larsson, Petrović, Pérez).
_SURNAME_SHAPE = re.compile(
    r"..(?:ski|ska|cki|cka|wicz|ová|ov|ova|ev|eva|enko|sson|ssen|sen|poulos|ović|ovic|vić|ić|"
    r"mann|escu|ez|yan|shvili|oglu|oğlu)$"
)


def _context(text: str, start: int) -> float:
    """Confidence that the words right before ``start`` introduce a name (0 = no cue).

    1.0 for a title directly before ("Dr.", "Frau"), 0.85 for a strong cue ("my name is",
    "Patient:", "Dear"), 0.5 for a weak one ("hi", "thanks", "from").
    """
    before = text[max(0, start - 28) : start]
    if not before or before[-1] not in " \t\n:,-":
        return 0.0
    words = before.lower().split()
    if not words:
        return 0.0
    last = words[-1]
    if before[-1] in " \t" and last.rstrip(".") in _TITLES and (last != "m" or last == "m."):
        return 1.0
    if before.rstrip(" \t")[-1:] in ".!?":
        return 0.0
    tail = " ".join(words[-3:]).rstrip(":,-").strip()
    for size in (3, 2, 1):
        phrase = " ".join(tail.split()[-size:])
        if phrase in _STRONG_CUES:
            return 0.85
        if phrase in _WEAK_CUES:
            return 0.5
    return 0.0


#: Verbs that follow a person: a capitalised word before them is a name even outside the lists.
_SPEECH_AFTER = re.compile(
    r"(?:'s)?[ \t]+(?:said|says|asked|asks|told|tells|replied|wrote|writes|added|explained|"
    r"confirmed|called|emailed|texted|lives|lived|works|worked|signed|approved|reported)\b"
)


def name_findings(text: str) -> Iterator[Finding]:
    """PERSON findings from titles, cue phrases, gazetteer sequences and SURNAME, Given forms."""
    first, last = first_names(), surnames()
    for match in _SEQ_RE.finditer(text):
        start, end = _trim(text, match.start(), match.end())
        words = text[start:end].split()
        while words and words[0].casefold().rstrip(",") in _LEADING:
            start = text.index(words[1], start + len(words[0])) if len(words) > 1 else end
            words = words[1:]
        if not words or words[0].casefold() in _PLACE:
            continue
        gaz = _gazetteer_score(words)
        cue = _context(text, start)
        if cue >= 1.0:
            yield Finding(start, end, "PERSON", max(0.85, gaz), "name.title")
        elif cue >= 0.85:
            yield Finding(start, end, "PERSON", min(0.95, max(0.85, gaz + 0.1)), "name.context")
        elif cue:
            score = max(gaz + 0.15 if gaz else 0.0, 0.6 if len(words) > 1 else 0.0)
            if score:
                yield Finding(start, end, "PERSON", min(0.95, score), "name.context")
        elif gaz:
            yield Finding(start, end, "PERSON", gaz, "name.gazetteer")
        elif _SPEECH_AFTER.match(text, end) and words[-1].casefold() not in common_names():
            yield Finding(start, end, "PERSON", 0.6, "name.context")  # "Quionia said …"
    if _HAS_UPPER_PAIR.search(text):
        for match in _UPPER_SEQ_RE.finditer(text):
            words = match.group().split()
            if words[0].casefold() in first and words[-1].casefold() in last:
                yield Finding(match.start(), match.end(), "PERSON", 0.75, "name.gazetteer")
    if "," in text:
        for match in _SURNAME_FIRST_RE.finditer(text):
            family, _, given = match.group().partition(",")
            key = family.casefold()
            if key in _LEADING or key in _PLACE:
                continue
            if key in last or (family.isupper() and given.strip().casefold() in first):
                yield Finding(match.start(), match.end(), "PERSON", 0.8, "name.gazetteer")
    yield from _lower_case_names(text)


_LOWER_WORD = re.compile(rf"[{_LO}]{{3,}}")
#: A whole lower-case word that is not glued to an identifier, path or address on its left.
_LOWER_TOKEN = re.compile(rf"(?<![\w_./@\\\-:=#%&+~*`<>\[\]{{}}])[{_LO}]{{3,}}(?![\w])")
#: Characters that make a word part of an identifier, a path, an address or markup, not prose.
_GLUE = frozenset("_./@\\-:=#%&+~*`<>[]{}0123456789")


def _lower_case_names(text: str) -> Iterator[Finding]:
    """Names typed in lower case ("approved by jonas", "ana lópez") in chat and logs.

    Only names that are no ordinary word in the shipped languages are taken: a first name and a
    surname side by side, or one name after a cue ("by", "hi", "my name is").
    """
    eligible = _lower_names()
    candidates = set(_LOWER_WORD.findall(text))
    hits = candidates & eligible
    hits.update(w for w in candidates - hits if not w.isascii() and _fold(w) in eligible)
    first, last, common = first_names(), surnames(), common_names()
    # any listed name, ordinary word or not, counts right after a strong cue ("my name is leone")
    known = {w for w in candidates - hits if (w in first or w in last) and w not in common}
    if not hits and not known:
        return
    size = len(text)
    words = [
        m
        for m in _LOWER_TOKEN.finditer(text)
        if m.end() == size or text[m.end()] not in _GLUE or text[m.end() : m.end() + 2] in _END
    ]
    index = 0
    while index < len(words):
        word = words[index]
        nxt = words[index + 1] if index + 1 < len(words) else None
        if nxt is not None and _lower_pair(text, word, nxt, hits):
            yield Finding(word.start(), nxt.end(), "PERSON", 0.8, "name.lowercase")
            index += 2
            continue
        index += 1
        if word.group() not in hits:
            if word.group() in known and _context(text, word.start()) >= 0.85:
                yield Finding(word.start(), word.end(), "PERSON", 0.75, "name.lowercase")
            continue
        before, after = text[word.start() - 1 : word.start()], text[word.end() : word.end() + 1]
        quoted = before != "" and before in "\"'" and before == after  # a JSON value on its own
        whole = word.start() == 0 and word.end() == size  # a JSON string walked as a value
        if quoted or whole or _context(text, word.start()):
            yield Finding(word.start(), word.end(), "PERSON", 0.7, "name.lowercase")


def _lower_pair(text: str, word: re.Match[str], nxt: re.Match[str], hits: set[str]) -> bool:
    """A lower-case first name and surname side by side, at least one of them no common word."""
    if text[word.end() : nxt.start()] != " ":
        return False
    head, tail = word.group(), nxt.group()
    if head in _STOP or tail in _STOP or (head not in hits and tail not in hits):
        return False
    first, last = first_names(), surnames()
    if not (head in first or _fold(head) in first):
        return False
    if tail in last or _fold(tail) in last:
        return True
    return head in hits and tail not in _lower_names() and bool(_SURNAME_SHAPE.search(tail))


#: Sentence punctuation right after a word ("by jonas." "by jonas.\n") keeps it prose.
_END = frozenset({". ", ".", ".\n", ":", ": ", "- "})


_HAS_UPPER_PAIR = re.compile(rf"[{_UP}]{{2}}")


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
_UNIT = (
    r"(?:,?[ \t]+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|#)\.?[ \t]*#?[\w\-]+)?"
)
_EN_SUFFIXES = frozenset(_EN_SUFFIX.split("|"))
#: House number, then up to four capitalised words; the last street-type word ends the street.
_EN_RE = re.compile(
    rf"\d(?<![\w.]\d)\d{{0,5}}[A-Za-z]?(?:[/\-]\d{{1,4}})?,?[ \t]+{CAP}(?:[ \t]+{CAP}){{0,3}}"
)
_WORD = re.compile(rf"{CAP}")
_UNIT_AFTER = re.compile(_UNIT[3:-2] if _UNIT.startswith("(?:") else _UNIT)
_UNIT_BEFORE = re.compile(
    r"(?:Studio|Flat|Apartment|Apt\.?|Unit|Suite|H\.?[ ]?No\.?)[ \t]*[\w/\-]*,?[ \t]*\Z"
)
_EN_INDIA_RE = re.compile(rf"H\.?[ ]?No\.?[ \t]*\d[\w/\-]*,?[ \t]+{CAP}(?:[ \t]+{CAP}){{0,3}}")
_COMPOUND = (
    "straße|strasse|str\\.|weg|platz|allee|gasse|ring|damm|ufer|steig|pfad|chaussee|markt|"
    "straat|laan|plein|singel|gracht|kade|dijk|hof|pad|dreef|steeg|baan|boulevard|plantsoen|park|"
    "Straße|Strasse|Weg|Platz|Allee|Gasse|Ring|Damm|Ufer|Steig|Pfad|Markt"
)
_COMPOUND_ENDINGS = tuple(ending.replace("\\", "").lower() for ending in _COMPOUND.split("|"))
#: A house number right after a word (``…straße 12``, ``…weg 7/9``); the word is checked in code.
_COMPOUND_RE = re.compile(
    r"\d(?<=[^\W\d_.][^\W\d_.][ \t]\d|[^\W\d_]\.[ \t]\d)\d{0,3}[a-z]?"
    r"(?:[ \t]?[/\-][ \t]?\d{1,4}[a-z]?)?(?![\w])"
)
_WORD_LEFT = re.compile(rf"(?<![\w\-'’])(?:[{_UP}][\w'’]*-[\w'’\-]*[ \t])?[\w'’\-]*\Z")
_ROMANCE_TYPES = (
    "Rue|Avenue|Boulevard|Bd|Chemin|Impasse|Allée|Quai|Route|Place|Cours|Passage|Square|Voie|"
    "Calle|C/|C\\.|Avenida|Avda\\.|Paseo|Plaza|Rambla|Pasadizo|Vial|Camino|Ronda|Alameda|Cañada|"
    "Glorieta|Pasaje|Travesía|Callejón|Urbanización|Acceso|Cuesta|Carretera|Via|Viale|Piazza|"
    "Piazzale|Corso|Borgo|Contrada|Canale|Stretto|Vicolo|Largo|Incrocio|Rotonda|Strada|"
    "Lungomare|Viottolo|Rua|Praça|Travessa|Morro|Núcleo|Pátio|Conjunto|Feira|Favela|Rodovia|"
    "Estrada|Ladeira|Vila|Quadra|Setor|Jardim|Loteamento|Residencial|Chácara|Condomínio|Vereda"
)
_LINK = r"(?:(?:de la|de las|de los|de|del|di|della|delle|dei|degli|da|do|dos|das|du|des|le|la|les)[ \t]+|l'|d')"
_ROMANCE_TAIL = (
    rf"[ \t]+{_LINK}*{CAP}(?:[ \t\-]+{_LINK}?{CAP}){{0,3}}"
    r"(,?[ \t]+(?:n\.?[ºo°]?[ \t]*)?\d{1,5}[A-Za-z]?(?:[/\-]\d{1,4})?)?"
    r"(?:[ \t]+(?:Apt\.|Apto\.?|Piso|Puerta|Appartamento|Piano|Interno|Scala|Bloco|Casa)[ \t]*\w+)?"
)
_ROMANCE_RE = re.compile(rf"(?:{_ROMANCE_TYPES})" + _ROMANCE_TAIL)
_ROMANCE_NUMBERED_RE = re.compile(
    rf"\d(?<![\w.]\d)\d{{0,3}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?i:{_ROMANCE_TYPES})" + _ROMANCE_TAIL
)


#: Street words of further languages (Koskikatu, Parijsstraat, Storgatan, Nørregade, ul. X).
_STREET_ENDING = (
    r"(?:katu|tie|kuja|polku|gata|gatan|vej|gade|väg|vägen|veien|vei|gasse|utca|ulica|straat|"
    r"laan|stræde|strasse|straße|weg|platz|allee|ring|stra[sß]e|gränd|torget|plass|tér|út)"
)
#: ``6750 Koskikatu 25``, ``3037 ul. Północna 73``, ``23680 Parijsstraat 8``: a number, one to
#: four words with a capitalised (or street-typed) last word, and a house number.
_GENERIC_RE = re.compile(
    rf"\d(?<![\w.,:/\-]\d)\d{{0,5}}[ \t]+(?:(?:ul\.|al\.|os\.|pl\.)[ \t]+)?"
    rf"(?:[\w'’.\-]+[ \t]+){{0,3}}(?:{CAP}|[{_LO}]+{_STREET_ENDING})[ \t]+\d{{1,5}}[A-Za-z]?"
    rf"(?:[/\-]\d{{1,4}})?(?![\w.,:/\-]\w|\w)"
)
_GENERIC_NEGATIVE = re.compile(
    r"(?i)\b(?:order|invoice|ticket|ref|version|v|release|build|step|item|items|page|chapter|"
    r"room|table|figure|fig|line|row|case|job|run|batch|lot|port|pid|id|no|nr|top|than|of|to|"
    r"and|or|x|times|ms|sec|kb|mb|gb|usd|eur|gbp|pcs|units?)[ \t]*\Z"
)
_NUMBER_BEFORE = re.compile(r"(?<![\w.,:/\-])\d{1,6}[ \t]+\Z")
_UNIT_TAIL = re.compile(
    r"[ \t]*,?[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Box|Postbox)\.?[ \t]*#?\d[\w\-]*"
)


#: ``Apt. 425``, ``Suite 292``, ``P.O. Box 186``, ``Unit 4719 Box 7394``: address lines alone.
_UNIT_LINE = re.compile(
    r"(?<![\w.])(?:(?:Apt|Apartment|Suite|Ste|Unit|Flat)\.?[ \t]*#?\d{1,5}[A-Za-z]?"
    r"(?:[ \t]+Box[ \t]+\d{1,6})?|(?:P\.?[ \t]?O\.?[ \t]*)?(?:Box|Postbox|Post Box)[ \t]+\d{1,6})"
    r"(?![\w\-])"
)


_UNIT_WORDS = ("Apt", "Apartment", "Suite", "Ste", "Unit", "Flat", "Box")
#: A word, a blank and a digit: without it no ``number Words number`` street can be there.
_WORD_THEN_NUMBER = re.compile(r"[^\W\d_][ \t]+\d")


def _generic_addresses(text: str) -> Iterator[Finding]:
    if any(word in text for word in _UNIT_WORDS):
        for match in _UNIT_LINE.finditer(text):
            yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.6, "address.unit")
    if _WORD_THEN_NUMBER.search(text) is None:
        return
    for match in _GENERIC_RE.finditer(text):
        words = text[match.start() : match.end()].split()[1:-1]
        if not words or any(w.casefold() in _STOP - {"street", "road", "avenue"} for w in words):
            continue
        if sum(ch.isalpha() for ch in "".join(words)) < 4:
            continue
        if _GENERIC_NEGATIVE.search(text, max(0, match.start() - 12), match.start()):
            continue
        end = match.end()
        unit = _UNIT_TAIL.match(text, end)
        yield Finding(
            match.start(), unit.end() if unit else end, "STREET_ADDRESS", 0.6, "address.generic"
        )


def _widen(text: str, found: Finding) -> Finding:
    """Take a building number written before the street (``8116 56 rue La Boétie``) and a unit
    after it (``Apt. 864``) into the address."""
    start, end = found.start, found.end
    before = _NUMBER_BEFORE.search(text, max(0, start - 8), start)
    if before is not None:
        start = before.start()
    unit = _UNIT_TAIL.match(text, end)
    if unit is not None:
        end = unit.end()
    if (start, end) == (found.start, found.end):
        return found
    return Finding(start, end, found.type, found.score, found.detector)


_BLOCK_WORD = re.compile(
    rf"(?:[{_UP}\d(][\w'’.\-()]*|[{_LO}]{{1,3}}|[{_UP}{_LO}]+-[{_UP}][\w\-]*),?"
)
_BLOCK_STOP = frozenset(
    _words("thanks thank regards best cheers dear hi hello kind sincerely yours sent from the")
)


#: ``, Springfield, IL 62704``, ``, ALT-DIETMANNS, Austria``: city, region, country, code.
_INLINE_TAIL = re.compile(
    rf"(?:,[ \t]*(?:{CAP}|[{_UP}][{_UP}\-]+)(?:[ \t]+(?:{CAP}|[{_UP}][{_UP}\-]+|de|del|na|am)){{0,3}}"
    r"(?:[ 	]+\d{4,6}(?:-\d{4})?)?){1,3}"
    r"|[ 	]+\d{5}(?:-\d{4})?(?![\w\-])"
)


def _block_line(line: str) -> bool:
    """A short line of capitalised words and numbers: a unit, city, region, country or code."""
    body = line.strip(" \t,")
    if not body or len(body) > 48 or any(c in body for c in ':@?!;/\\=<>[]{}"') or "http" in body:
        return False
    words = body.split()
    if len(words) > 6 or words[0].casefold().strip(",.") in _BLOCK_STOP:
        return False
    if sum(c.isdigit() for c in body) > 6:
        return False  # a phone or account number on the next line is no part of the address
    return all(_BLOCK_WORD.fullmatch(word) for word in words)


def address_block(text: str, found: Finding) -> Finding:
    """``found`` widened over the rest of its line and the address lines below it
    (``Apt. 946`` / ``Suwałki`` / ``Poland 11248``): the street alone still locates a person."""
    end = found.end
    tail = _INLINE_TAIL.match(text, end)
    if tail is not None and tail.end() > end:
        end = tail.end()
    eol = text.find("\n", end)
    eol = len(text) if eol < 0 else eol
    if end < eol and _block_line(text[end:eol]):
        end = eol
    for _ in range(4):
        if end >= len(text) or text[end] != "\n":
            break
        nxt = end + 1
        if text[nxt : nxt + 1] == "\n":  # one blank line inside an address block
            nxt += 1
        stop = text.find("\n", nxt)
        stop = len(text) if stop < 0 else stop
        if not _block_line(text[nxt:stop]):
            break
        end = stop
    trimmed = len(text[:end].rstrip(" \t,."))
    end = max(found.end, trimmed)
    if end == found.end:
        return found
    return Finding(found.start, end, found.type, found.score, found.detector)


def address_findings(text: str) -> Iterator[Finding]:
    """STREET_ADDRESS findings: house number + street for the supported languages."""
    yield from numbered_address_findings(text)
    yield from unnumbered_address_findings(text)


def numbered_address_findings(text: str) -> Iterator[Finding]:
    """Addresses with a house number (run only near digits)."""
    for found in _numbered(text):
        yield _widen(text, found)
    yield from _generic_addresses(text)


def _numbered(text: str) -> Iterator[Finding]:
    for match in _EN_RE.finditer(text):
        words = list(_WORD.finditer(text, match.start(), match.end()))
        last = next(
            (i for i in range(len(words) - 1, -1, -1) if words[i].group() in _EN_SUFFIXES), -1
        )
        if last < 0 or (last == 0 and words[0].group() in ("St", "Dr")):
            continue
        end = words[last].end()
        if text[end : end + 1] == ".":
            end += 1
        unit = _UNIT_AFTER.match(text, end)
        if unit is not None:
            end = unit.end()
        start = match.start()
        before = _UNIT_BEFORE.search(text, max(0, start - 24), start)
        if before is not None:
            start = before.start()
        yield Finding(start, end, "STREET_ADDRESS", 0.85, "address.grammar")
    if "No" in text:
        for match in _EN_INDIA_RE.finditer(text):
            yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.85, "address.grammar")
    for match in _COMPOUND_RE.finditer(text):
        word_end = match.start() - 1
        while word_end > 0 and text[word_end - 1] in " \t":
            word_end -= 1
        if not text[max(0, word_end - 12) : word_end].lower().endswith(_COMPOUND_ENDINGS):
            continue
        stem_end = word_end - 1 if text[word_end - 1] == "." else word_end
        left = _WORD_LEFT.search(text, max(0, stem_end - 60), stem_end)
        start = left.start() if left is not None else stem_end
        if text[start : start + 1].isupper():
            yield Finding(start, match.end(), "STREET_ADDRESS", 0.85, "address.grammar")
    for match in _ROMANCE_NUMBERED_RE.finditer(text):
        yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.9, "address.grammar")
    for match in _ROMANCE_RE.finditer(text):
        if not match.group(1) or (match.start() > 0 and text[match.start() - 1].isalnum()):
            continue
        yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.85, "address.grammar")


_FRENCH_RE = re.compile(
    rf"(?:rue|avenue|boulevard|chemin|impasse|allée|quai|place)[ \t]+{_LINK}*{CAP}(?:[ \t\-]+{_LINK}?{CAP}){{0,3}}"
)


def unnumbered_address_findings(text: str) -> Iterator[Finding]:
    """Romance-language streets without a house number ("boulevard Maurice"): low confidence."""
    for match in _FRENCH_RE.finditer(text):
        if match.start() == 0 or not text[match.start() - 1].isalnum():
            yield Finding(match.start(), match.end(), "STREET_ADDRESS", 0.88, "address.grammar")
    for match in _ROMANCE_RE.finditer(text):
        if match.group(1) or (match.start() > 0 and text[match.start() - 1].isalnum()):
            continue
        score = 0.55
        yield Finding(match.start(), match.end(), "STREET_ADDRESS", score, "address.grammar")
