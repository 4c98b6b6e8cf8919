"""A deterministic generator of realistic agent traces: support, booking and banking.

Every user has a Faker profile (name, e-mail, phone, address, IBAN, card) in one of several
locales and several sessions; every session is a system prompt, a user request that mentions PII,
an assistant tool call whose JSON arguments copy values from the request, the tool's result and
the assistant's answer, sometimes a second turn. The same ``seed`` always gives the same traces.

Canaries (optional) are random secrets planted in ``canary_repeats`` traces each and returned
as :class:`Canary` records, so a later membership or extraction audit knows what to look for.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from privacy_finetuner.data.records import Message, ToolCall, Trace
from privacy_finetuner.errors import InvalidParameterError

__all__ = ["DOMAINS", "LOCALES", "TOOLS", "Canary", "SynthResult", "generate_traces"]

LOCALES: tuple[str, ...] = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL")

_COMPANIES = {
    "support": ("Northwind Outfitters", "Acme Home", "Brightline Electronics"),
    "booking": ("Skyway Travel", "StayEasy Hotels", "Trailhead Tours"),
    "banking": ("Harbor Bank", "Meridian Credit Union", "Copperleaf Bank"),
}
_CITIES = (
    "Paris", "Berlin", "Madrid", "Rome", "Amsterdam", "London", "Lisbon", "Vienna",
    "Prague", "Dublin", "Munich", "Barcelona", "Milan", "Zurich", "Oslo", "Boston",
)  # fmt: skip
_REASONS = ("damaged", "wrong_size", "late_delivery", "not_as_described")
_CARD_REASONS = ("lost", "stolen", "suspicious_activity")


def _fn(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": v} for k, v in params.items()},
                "required": list(params),
            },
        },
    }


TOOLS: dict[str, tuple[dict[str, Any], ...]] = {
    "support": (
        _fn("lookup_order", "Find an order by id.", order_id="string"),
        _fn("request_refund", "Open a refund.", order_id="string", reason="string"),
        _fn("update_email", "Change the e-mail on file.", customer_id="string", email="string"),
    ),
    "booking": (
        _fn("search_hotels", "Find hotels.", city="string", check_in="string", nights="integer"),
        _fn("cancel_booking", "Cancel a booking.", booking_ref="string"),
        _fn("book_table", "Reserve a table.", city="string", party_size="integer", time="string"),
    ),
    "banking": (
        _fn("get_balance", "Account balance.", account_id="string"),
        _fn("transfer_funds", "Send money.", to_iban="string", amount="number"),
        _fn("block_card", "Block a card.", card_last4="string", reason="string"),
    ),
}


@dataclass(frozen=True)
class Canary:
    """A planted secret: ``text`` appears verbatim in the user turn of every trace in ``traces``."""

    id: str
    secret: str
    text: str
    user_id: str
    traces: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form written next to the data (``OUT.canaries.json``)."""
        return asdict(self)


@dataclass
class SynthResult:
    """Generated traces and the canaries planted in them."""

    traces: list[Trace]
    canaries: list[Canary]


@dataclass
class _User:
    id: str
    locale: str
    name: str
    email: str
    phone: str
    address: str
    iban: str
    card: str
    customer_id: str


_SORTED_CITIES: dict[str, tuple[str, ...]] = {}


def _city(f: Any, locale: str) -> str:
    """``f.city()``, but from the provider's city list in sorted order.

    Some Faker locales (it_IT) build that list from a set, so its order, and so which city a
    seeded draw returns, changes with PYTHONHASHSEED: the same seed gave other traces (and another
    trained tokenizer) in another process, and data-parallel ranks disagreed.
    """
    if locale not in _SORTED_CITIES:
        lists = [p.cities for p in f.providers if isinstance(getattr(p, "cities", None), list)]
        _SORTED_CITIES[locale] = tuple(sorted(set(lists[0]))) if lists else ()
    cities = _SORTED_CITIES[locale]
    return str(f.random_element(cities)) if cities else str(f.city())


def _profile(fake: Any, rng: random.Random, index: int) -> _User:
    locale = rng.choice(LOCALES)
    f = fake[locale]
    return _User(
        id=f"user-{index:05d}",
        locale=locale,
        name=f.name(),
        email=f.email(),
        phone=f.phone_number(),
        address=f.street_address() + ", " + _city(f, locale),
        iban=f.iban(),
        card=f.credit_card_number(),
        customer_id=f"C{rng.randint(100000, 999999)}",
    )


_Turn = tuple[str, ToolCall, dict[str, Any], str]


def _support(u: _User, rng: random.Random, cid: str) -> _Turn:
    result: dict[str, Any]
    order = f"ORD-{rng.randint(10000, 99999)}"
    kind = rng.randrange(3)
    if kind == 0:
        ask = rng.choice(
            [
                f"Hi, this is {u.name}. Where is my order {order}?",
                f"Can you check the status of order {order}? My email is {u.email}.",
                f"Hello! Order {order} hasn't arrived yet. I'm {u.name}, phone {u.phone}.",
            ]
        )
        status = rng.choice(["shipped", "processing", "delivered", "delayed"])
        call = ToolCall(cid, "lookup_order", {"order_id": order})
        result = {"order_id": order, "status": status, "ship_to": u.address}
        answer = f"Thanks for waiting. Order {order} is currently {status}."
    elif kind == 1:
        reason = rng.choice(_REASONS)
        ask = rng.choice(
            [
                f"I want a refund for {order}, it arrived {reason.replace('_', ' ')}.",
                f"My name is {u.name} and order {order} is {reason.replace('_', ' ')}. Refund please.",
            ]
        )
        call = ToolCall(cid, "request_refund", {"order_id": order, "reason": reason})
        result = {"refund_id": f"R-{rng.randint(1000, 9999)}", "status": "opened"}
        answer = f"I have opened refund {result['refund_id']} for order {order}."
    else:
        new = f"{u.name.split()[0].lower()}.{rng.randint(1, 99)}@example.org"
        ask = f"Please change my email to {new}. Customer number {u.customer_id}, I'm {u.name}."
        call = ToolCall(cid, "update_email", {"customer_id": u.customer_id, "email": new})
        result = {"ok": True}
        answer = f"Done, {u.name.split()[0]}: your e-mail is now {new}."
    return ask, call, result, answer


def _booking(u: _User, rng: random.Random, cid: str) -> _Turn:
    result: dict[str, Any]
    kind = rng.randrange(3)
    city = rng.choice(_CITIES)
    if kind == 0:
        day = date(2026, 1, 1) + timedelta(days=rng.randrange(365))
        nights = rng.randint(1, 7)
        ask = rng.choice(
            [
                f"I need a hotel in {city} from {day.isoformat()} for {nights} nights.",
                f"Hi, {u.name} here. Find me a room in {city}, check-in {day.isoformat()}, "
                f"{nights} nights. Call me at {u.phone} if needed.",
            ]
        )
        call = ToolCall(
            cid, "search_hotels", {"city": city, "check_in": day.isoformat(), "nights": nights}
        )
        price = rng.randint(60, 300)
        result = {"hotels": [{"name": f"Hotel {city} Central", "price": price}]}
        answer = f"Hotel {city} Central has a room for {price} per night. Shall I book it?"
    elif kind == 1:
        ref = f"BK{rng.randint(100000, 999999)}"
        ask = f"Please cancel booking {ref}. It's under {u.name}, email {u.email}."
        call = ToolCall(cid, "cancel_booking", {"booking_ref": ref})
        result = {"booking_ref": ref, "cancelled": True}
        answer = f"Booking {ref} is cancelled. A confirmation goes to {u.email}."
    else:
        size = rng.randint(1, 8)
        hour = f"{rng.randint(17, 22)}:{rng.choice(['00', '30'])}"
        ask = f"Table for {size} in {city} at {hour} tonight please, name {u.name}."
        call = ToolCall(cid, "book_table", {"city": city, "party_size": size, "time": hour})
        result = {"confirmed": True, "restaurant": f"Trattoria {city}"}
        answer = f"Your table for {size} at Trattoria {city} is confirmed for {hour}."
    return ask, call, result, answer


def _banking(u: _User, rng: random.Random, cid: str) -> _Turn:
    result: dict[str, Any]
    kind = rng.randrange(3)
    account = f"ACC{rng.randint(1000000, 9999999)}"
    if kind == 0:
        ask = rng.choice(
            [
                f"What's the balance on account {account}?",
                f"Hi, I'm {u.name}. How much is left on {account}?",
            ]
        )
        call = ToolCall(cid, "get_balance", {"account_id": account})
        balance = round(rng.uniform(10, 20000), 2)
        result = {"account_id": account, "balance": balance, "currency": "EUR"}
        answer = f"The balance of {account} is {balance:.2f} EUR."
    elif kind == 1:
        amount = rng.randint(5, 2000)
        ask = f"Send {amount} EUR to {u.iban} please. My card is {u.card}."
        call = ToolCall(cid, "transfer_funds", {"to_iban": u.iban, "amount": amount})
        result = {"transfer_id": f"T{rng.randint(10000, 99999)}", "status": "pending"}
        answer = f"Transfer of {amount} EUR is pending, reference {result['transfer_id']}."
    else:
        reason = rng.choice(_CARD_REASONS)
        last4 = u.card[-4:]
        ask = (
            f"Block my card ending {last4}, it was {reason.replace('_', ' ')}. {u.name}, {u.phone}."
        )
        call = ToolCall(cid, "block_card", {"card_last4": last4, "reason": reason})
        result = {"blocked": True}
        answer = f"The card ending {last4} is blocked. A new card goes to {u.address}."
    return ask, call, result, answer


_DOMAINS: dict[str, Callable[[_User, random.Random, str], _Turn]] = {
    "support": _support,
    "booking": _booking,
    "banking": _banking,
}


#: The agent domains the generator knows, each with its own tools.
DOMAINS: tuple[str, ...] = tuple(_DOMAINS)


def _session(
    u: _User, rng: random.Random, session: int, secret: str | None, domains: tuple[str, ...]
) -> Trace:
    domain = rng.choice(domains)
    company = rng.choice(_COMPANIES[domain])
    messages = [
        Message(
            "system",
            f"You are the {domain} assistant of {company}. Use the tools to act for the customer.",
        )
    ]
    turns = 2 if rng.random() < 0.3 else 1
    for t in range(turns):
        cid = f"call_{session}_{t}"
        ask, call, result, answer = _DOMAINS[domain](u, rng, cid)
        if secret is not None and t == 0:
            ask = f"{ask} {secret}"
        messages.append(Message("user", ask))
        messages.append(Message("assistant", "", (call,)))
        messages.append(Message("tool", json.dumps(result), tool_call_id=cid, name=call.name))
        messages.append(Message("assistant", answer))
    return Trace(
        messages=tuple(messages),
        user_id=u.id,
        session_id=f"{u.id}-s{session}",
        tools=TOOLS[domain],
        meta={"domain": domain},
    )


def generate_traces(
    n: int,
    *,
    seed: int = 0,
    canaries: int = 0,
    canary_repeats: int = 1,
    max_sessions: int = 6,
    domains: Sequence[str] | None = None,
) -> SynthResult:
    """``n`` synthetic traces from users with 1-``max_sessions`` sessions each.

    Args:
        n: number of traces.
        seed: the same seed gives byte-identical output.
        canaries: number of distinct secrets to plant.
        canary_repeats: traces (of the same user) that carry each secret.
        max_sessions: most sessions per user.
        domains: the domains to draw sessions from (default: all of :data:`DOMAINS`), e.g.
            only ``["banking"]`` for a fine-tuning set whose tools a base model has not seen.

    Raises:
        InvalidParameterError: an unknown or empty ``domains``.
    """
    chosen = DOMAINS if domains is None else tuple(dict.fromkeys(domains))
    unknown = [d for d in chosen if d not in DOMAINS]
    if unknown or not chosen:
        what = f"unknown domain(s) {', '.join(map(repr, unknown))}" if unknown else "no domains"
        raise InvalidParameterError(f"{what}; choose from {', '.join(DOMAINS)}")
    from faker import Faker

    rng = random.Random(seed)  # noqa: S311  # nosec B311
    fake = Faker(list(LOCALES))
    fake.seed_instance(seed)
    traces: list[Trace] = []
    planted: list[Canary] = []
    canary_rng = random.Random(seed + 1_000_003)  # noqa: S311  # nosec B311
    user_index = 0
    while len(traces) < n:
        user = _profile(fake, rng, user_index)
        user_index += 1
        sessions = min(rng.randint(1, max_sessions), n - len(traces))
        secret: str | None = None
        canary: Canary | None = None
        if len(planted) < canaries:
            code = "".join(canary_rng.choice("0123456789") for _ in range(12))
            secret = f"My recovery code is {code[:4]}-{code[4:8]}-{code[8:]}."
            canary = Canary(f"canary-{len(planted):04d}", code, secret, user.id)
            planted.append(canary)
            sessions = max(sessions, min(canary_repeats, n - len(traces)))
        for s in range(sessions):
            carries = canary is not None and s < canary_repeats
            trace = _session(user, rng, s, secret if carries else None, chosen)
            if carries and canary is not None:
                canary.traces.append(len(traces))
                trace.meta["canary_id"] = canary.id
            traces.append(trace)
    return SynthResult(traces=traces, canaries=planted)
