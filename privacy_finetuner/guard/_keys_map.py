"""Structured keys that name an entity type (``email``, ``card_number``, ``dob``, …).

Used by :meth:`ContextGuard.protect_messages` for JSON tool-call arguments and by the keyed-value
pass of the built-in detector for ``key: value`` text.
"""

from __future__ import annotations

import re

__all__ = ["KEYED_TEXT_TYPES", "entity_for_key"]

_NORMALISE = re.compile(r"[^a-z0-9]")

_EXACT: dict[str, str] = {}
_KEYS_BY_ENTITY: tuple[tuple[str, str], ...] = (
    ("EMAIL", "email emailaddress mail email1 email2 contactemail useremail customeremail"),
    (
        "PHONE",
        "phone phonenumber mobile mobilenumber tel telephone cell cellphone fax msisdn "
        "contactphone homephone workphone phoneno",
    ),
    ("CREDIT_CARD", "cardnumber creditcard creditcardnumber ccnumber cardno pan card cc ccnum"),
    ("IBAN", "iban bankaccount accountnumber ibannumber"),
    ("US_SSN", "ssn socialsecuritynumber socialsecurity socsec"),
    ("UK_NINO", "nino nationalinsurancenumber ninumber"),
    (
        "NATIONAL_ID",
        "nationalid idnumber taxid passport passportnumber dni nie nif bsn pesel "
        "personnummer codicefiscale nir steuerid personalid governmentid",
    ),
    (
        "PERSON",
        "name fullname firstname lastname surname givenname familyname patientname "
        "customername contactname recipientname sendername holdername cardholder cardholdername "
        "accountholder middlename displayname nameoncard guestname passengername employeename",
    ),
    (
        "STREET_ADDRESS",
        "address street streetaddress address1 address2 addressline1 "
        "addressline2 addr homeaddress billingaddress shippingaddress mailingaddress line1 line2",
    ),
    ("DATE_OF_BIRTH", "dob dateofbirth birthdate birthday birthdt"),
    ("IP_ADDRESS", "ip ipaddress clientip remoteaddr remoteip sourceip srcip ipv4 ipv6"),
    (
        "SECRET",
        "password passwd pwd secret apikey token accesstoken refreshtoken clientsecret "
        "privatekey authorization authtoken secretkey accesskey sessiontoken passphrase",
    ),
    ("MEDICAL_RECORD_NUMBER", "mrn medicalrecordnumber chartnumber patientid medicalrecord"),
)
for _entity, _keys in _KEYS_BY_ENTITY:
    for _key in _keys.split():
        _EXACT[_key] = _entity

#: Types whose key alone is strong evidence even in free text (``name: "…"``); the others are
#: found by their own validators wherever they appear.
KEYED_TEXT_TYPES = frozenset(
    {"PERSON", "STREET_ADDRESS", "DATE_OF_BIRTH", "SECRET", "MEDICAL_RECORD_NUMBER", "NATIONAL_ID"}
)


def entity_for_key(key: str) -> str | None:
    """The entity type a structured key names, or None (``"Card-Number"`` → ``CREDIT_CARD``)."""
    norm = _NORMALISE.sub("", key.lower())
    if norm in _EXACT:
        return _EXACT[norm]
    for prefix in ("customer", "user", "patient", "contact", "billing", "shipping", "home", "work"):
        if norm.startswith(prefix) and norm[len(prefix) :] in _EXACT:
            return _EXACT[norm[len(prefix) :]]
    if norm.endswith("email"):
        return "EMAIL"
    return None
