"""Which common kinds of personal data the context guard has no detector for.

A privacy officer reading "guard applied" needs to know what it did *not* look for. The list
below is a reference set of personal-data categories commonly named in privacy guidance (NIST
SP 800-122 section 2.1 examples of PII, GDPR Art. 4(1) and the Art. 9 special categories, the
HIPAA Safe Harbor identifiers of 45 CFR 164.514(b)(2)); the categories absent from the guard's
public :data:`privacy_finetuner.guard.ENTITY_TYPES` (as the run's guard configuration
restricted them; the training layer records them in the report) are reported as not covered. It is a
statement about the guard's detectors, not about the data: nothing here reads a record.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["COMMON_PII_CATEGORIES", "uncovered_categories"]

#: Reference categories (key: the guard's entity type name where one exists) and a label.
COMMON_PII_CATEGORIES: dict[str, str] = {
    "PERSON": "personal names",
    "EMAIL": "e-mail addresses",
    "PHONE": "telephone and fax numbers",
    "STREET_ADDRESS": "postal addresses",
    "DATE_OF_BIRTH": "dates of birth",
    "US_SSN": "US social security numbers",
    "UK_NINO": "UK national insurance numbers",
    "NATIONAL_ID": "other national identity numbers",
    "CREDIT_CARD": "payment card numbers",
    "IBAN": "bank account numbers (IBAN)",
    "IP_ADDRESS": "IP addresses",
    "URL_CREDENTIAL": "credentials in URLs",
    "SECRET": "API keys, tokens and passwords",  # nosec B105 - a label, not a secret
    "MEDICAL_RECORD_NUMBER": "medical record numbers",
    "PASSPORT_NUMBER": "passport numbers",
    "DRIVER_LICENSE": "driving licence numbers",
    "BANK_ACCOUNT_NUMBER": "domestic bank account and routing numbers (non-IBAN)",
    "HEALTH_PLAN_NUMBER": "health plan beneficiary and insurance numbers",
    "VEHICLE_ID": "vehicle identifiers and licence plates",
    "DEVICE_ID": "device identifiers and serial numbers (IMEI, MAC address)",
    "USERNAME": "user names and account handles",
    "GEOLOCATION": "precise locations (coordinates, places below city level)",
    "OTHER_DATE": "other dates tied to a person (admission, discharge, death)",
    "BIOMETRIC": "biometric identifiers",
    "SPECIAL_CATEGORY": (
        "GDPR Art. 9 data in free text: health conditions, ethnicity, religion, political "
        "opinions, sexual orientation, trade-union membership"
    ),
}


def uncovered_categories(entity_types: Iterable[str]) -> list[str]:
    """Labels of the reference categories with no detector among ``entity_types`` (the guard's
    types that ran: the report's ``guard.entity_types``; empty when the guard was not applied),
    in list order."""
    covered = set(entity_types)
    return [label for key, label in COMMON_PII_CATEGORIES.items() if key not in covered]
