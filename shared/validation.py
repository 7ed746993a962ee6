"""What a valid send request is: every problem of its fields, found without I/O.

Both send paths (POST /sms/send and POST /sms/send/batch) walk their input through here; smsctl
checks its recipient and body here too. The checks that need the database (does the named sender
exist, which pair a conversation belongs to) only read, and `judge_references` gives the verdict.
Nothing here imports psycopg, httpx, starlette or a provider SDK (import-linter checks it).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID

import phonenumbers
from phonenumbers import PhoneNumberType

from shared.config import Settings

MAX_BODY_CHARS: Final = 1600
# Longer input is not a phone number; phonenumbers need not look at it.
MAX_NUMBER_INPUT: Final = 64
# Number types that can receive an SMS everywhere. VOIP numbers often can (and a provider refuses
# the rest with a permanent error), so they are accepted rather than refusing real users.
SMS_CAPABLE: Final = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP}
)
# By country calling code, more types that can. NANP: toll-free numbers can be text-enabled, and
# 5XX personal-communication numbers (Twilio's test numbers among them) are routed like mobiles.
SMS_CAPABLE_BY_COUNTRY: Final = {
    1: frozenset({PhoneNumberType.TOLL_FREE, PhoneNumberType.PERSONAL_NUMBER}),
}
_TYPE_NAMES: Final = {
    value: name.lower() for name, value in vars(PhoneNumberType).items() if name.isupper()
}
SEND_FIELDS: Final = (
    "to",
    "body",
    "from",
    "conversation_id",
    "priority",
    "send_at",
    "expires_at",
    "validity_seconds",
)
# Highest first: a priority's index is its number in sms_outbox.priority (0 high, 1 normal, 2 low).
PRIORITIES: Final = ("high", "normal", "low")
DEFAULT_PRIORITY: Final = "normal"
# A send_at this much before now is the client's clock running behind, not a time in the past.
CLOCK_SKEW: Final = timedelta(seconds=60)
MAX_SCHEDULE_AHEAD: Final = timedelta(days=35)
MAX_VALIDITY_SECONDS: Final = 259_200
# RFC 3339 date-time (the shape; fromisoformat then checks the ranges): an offset is required.
_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
BATCH_FIELDS: Final = ("messages",)
MAX_BATCH: Final = 1000
# The header is the field its problems name.
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY: Final = 255


@dataclass(frozen=True)
class Problem:
    """One validation error: the field, a stable code, and a readable message."""

    field: str
    code: str
    message: str


@dataclass(frozen=True)
class SendInput:
    """One message's fields after the checks that need no database; None where unusable.

    `from_named` says whether the request gave a `from` at all (even an unusable one): then the
    default sender does not stand in for it.
    """

    to: str | None
    body: str | None
    from_number: str | None
    conversation_id: UUID | None
    from_named: bool
    priority: str = DEFAULT_PRIORITY
    send_at: datetime | None = None
    expires_at: datetime | None = None  # from `expires_at`, or `validity_seconds` made absolute


class KnownSender(Protocol):
    """What the verdict needs of a sender row (shared.senders.Sender is one)."""

    @property
    def phone_number(self) -> str: ...

    @property
    def enabled(self) -> bool: ...


S = TypeVar("S", bound=KnownSender)


def to_e164(number: str, region: str) -> str | None:
    """`number` as E.164 when phonenumbers can parse it (without judging validity), else None."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(frozen=True)
class NumberFacts:
    """What check_recipient judges a number by."""

    e164: str
    valid: bool
    region: str | None
    kind: int  # a PhoneNumberType
    country_code: int


@functools.lru_cache(maxsize=65536)
def number_facts(raw: str, default_region: str | None) -> NumberFacts | None:
    """phonenumbers' facts about `raw` (None: not a phone number), kept for the recipients seen
    most recently: the metadata is fixed for the process, so the answer is too, and parsing is
    the costliest step of a send's validation (issue 15: "recipient checks cached")."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    return NumberFacts(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        valid=phonenumbers.is_valid_number(number),
        region=phonenumbers.region_code_for_number(number),
        kind=phonenumbers.number_type(number),
        country_code=number.country_code or 0,
    )


def check_recipient(
    raw: str, settings: Settings, field: str = "to", countries: frozenset[str] | None = None
) -> tuple[str, list[Problem]]:
    """`raw` as E.164 and the problems that forbid texting it (none when it may be texted).

    `countries`: the regions the caller's key may text (Caller.allowed_countries: within
    ALLOWED_COUNTRIES, possibly empty); None = ALLOWED_COUNTRIES (empty = any).
    """
    number = None if len(raw) > MAX_NUMBER_INPUT else number_facts(raw, settings.default_region)
    if number is None:
        return "", [Problem(field, "invalid_number", "not a phone number")]
    e164, region, kind = number.e164, number.region, number.kind
    if not number.valid:
        return e164, [Problem(field, "invalid_number", "not a valid phone number")]
    problems: list[Problem] = []
    allowed = settings.allowed_countries if countries is None else countries
    if (countries is not None or allowed) and region not in allowed:
        listed = ", ".join(sorted(allowed)) or "none for this API key"
        problems.append(
            Problem(field, "country_not_allowed", f"country {region} is not allowed ({listed})")
        )
    capable = SMS_CAPABLE | SMS_CAPABLE_BY_COUNTRY.get(number.country_code, frozenset())
    if kind not in capable:
        name = _TYPE_NAMES.get(kind, "unknown")
        problems.append(
            Problem(field, "number_type_not_allowed", f"a {name} number cannot receive SMS")
        )
    return e164, problems


def normalize_body(raw: str) -> str:
    """The body as stored: Windows line ends (CRLF) become newlines; nothing else changes."""
    return raw.replace("\r\n", "\n")


def check_body(body: str, field: str = "body") -> list[Problem]:
    """Problems of a (normalized) body: empty, too long, control or unencodable characters."""
    if not body.strip():
        return [Problem(field, "empty", "must contain text")]
    problems: list[Problem] = []
    if len(body) > MAX_BODY_CHARS:
        problems.append(
            Problem(field, "too_long", f"{len(body)} characters, at most {MAX_BODY_CHARS}")
        )
    controls = [
        i for i, c in enumerate(body) if unicodedata.category(c) == "Cc" and c not in "\n\t"
    ]
    if controls:
        first = controls[0]
        problems.append(
            Problem(
                field,
                "control_characters",
                f"control character U+{ord(body[first]):04X} at position {first}; "
                "only newline and tab are allowed",
            )
        )
    if any(unicodedata.category(c) == "Cs" for c in body):
        problems.append(Problem(field, "invalid_characters", "contains unpaired surrogates"))
    return problems


def check_idempotency_key(value: str | None) -> list[Problem]:
    """1-255 printable ASCII characters, when the header is present."""
    if value is None:
        return []
    if 0 < len(value) <= MAX_IDEMPOTENCY_KEY and value.isascii() and value.isprintable():
        return []
    return [
        Problem(
            IDEMPOTENCY_HEADER,
            "invalid_idempotency_key",
            f"must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
        )
    ]


def _string(payload: dict[str, Any], name: str, problems: list[Problem]) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(Problem(name, "invalid_type", "must be a string"))
        return None
    return value


@dataclass(frozen=True)
class Schedule:
    """How urgent a message is and when it may go: not before send_at, not after expires_at."""

    priority: str = DEFAULT_PRIORITY
    send_at: datetime | None = None
    expires_at: datetime | None = None


def parse_timestamp(raw: str) -> datetime | None:
    """An RFC 3339 date-time with its offset (2026-11-28T21:00:00Z), or None for anything else:
    no offset, a date alone, another ISO 8601 spelling, an impossible date."""
    if _RFC3339.fullmatch(raw) is None:
        return None
    try:
        return datetime.fromisoformat(raw.upper())
    except ValueError:
        return None


def _timestamp(payload: dict[str, Any], name: str, problems: list[Problem]) -> datetime | None:
    raw = _string(payload, name, problems)
    if raw is None:
        return None
    value = parse_timestamp(raw)
    if value is None:
        problems.append(
            Problem(
                name,
                "invalid_timestamp",
                "must be an RFC 3339 date-time with an offset, such as 2026-11-28T21:00:00Z",
            )
        )
    return value


def _validity(payload: dict[str, Any], problems: list[Problem]) -> int | None:
    value = payload.get("validity_seconds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(Problem("validity_seconds", "invalid_type", "must be an integer"))
        return None
    if not 1 <= value <= MAX_VALIDITY_SECONDS:
        problems.append(
            Problem("validity_seconds", "out_of_range", f"from 1 to {MAX_VALIDITY_SECONDS} seconds")
        )
        return None
    return value


def parse_schedule(payload: dict[str, Any], now: datetime) -> tuple[Schedule, list[Problem]]:
    """Check priority, send_at and expires_at or validity_seconds against `now` (aware).

    send_at may lie up to CLOCK_SKEW before now (kept as given: it is due at once) and at most
    MAX_SCHEDULE_AHEAD after. Validity counts from send_at, or from now when send_at is absent or
    already past; it becomes the absolute expires_at. An expires_at must come after now and after
    send_at, and at most MAX_VALIDITY_SECONDS after the time validity counts from.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    problems: list[Problem] = []
    priority = _string(payload, "priority", problems)
    if priority is not None and priority not in PRIORITIES:
        problems.append(Problem("priority", "invalid_priority", f"one of {', '.join(PRIORITIES)}"))
        priority = None
    send_at = _timestamp(payload, "send_at", problems)
    send_at_ok = send_at is not None
    if send_at is not None and send_at < now - CLOCK_SKEW:
        problems.append(Problem("send_at", "in_past", "must not be before now"))
        send_at_ok = False
    elif send_at is not None and send_at > now + MAX_SCHEDULE_AHEAD:
        days = MAX_SCHEDULE_AHEAD.days
        problems.append(Problem("send_at", "too_far_ahead", f"at most {days} days from now"))
        send_at_ok = False
    # Validity counts from here; a send_at with a problem still serves, so that an expiry meant
    # for it is not reported as a second problem.
    start = now if send_at is None else max(send_at, now)
    validity = _validity(payload, problems)
    expires_at = _timestamp(payload, "expires_at", problems)
    if expires_at is not None and payload.get("validity_seconds") is not None:
        problems.append(
            Problem(
                "validity_seconds",
                "conflicting_fields",
                "give expires_at or validity_seconds, not both",
            )
        )
    elif validity is not None:
        expires_at = start + timedelta(seconds=validity)
    elif expires_at is not None:
        if expires_at <= now:
            problems.append(Problem("expires_at", "in_past", "must be later than now"))
        elif send_at is not None and expires_at <= send_at:
            problems.append(Problem("expires_at", "before_send_at", "must be later than send_at"))
        elif expires_at > start + timedelta(seconds=MAX_VALIDITY_SECONDS):
            problems.append(
                Problem(
                    "expires_at",
                    "too_far_ahead",
                    f"at most {MAX_VALIDITY_SECONDS} seconds after send_at (or now)",
                )
            )
    expiry_fields = {"expires_at", "validity_seconds"}
    return (
        Schedule(
            priority=priority or DEFAULT_PRIORITY,
            send_at=send_at if send_at_ok else None,
            expires_at=None if any(p.field in expiry_fields for p in problems) else expires_at,
        ),
        problems,
    )


def parse_send(
    payload: dict[str, Any],
    settings: Settings,
    *,
    now: datetime,
    countries: frozenset[str] | None = None,
) -> tuple[SendInput, list[Problem]]:
    """Check one message's shape, recipient (within `countries`, as check_recipient), body,
    sender number, conversation id format and schedule (against `now`, the request's time)."""
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(SEND_FIELDS)}")
        for name in payload
        if name not in SEND_FIELDS
    ]
    to: str | None = None
    raw_to = _string(payload, "to", problems)
    if raw_to is None and payload.get("to") is None:
        problems.append(Problem("to", "required", "the recipient's phone number is required"))
    elif raw_to is not None:
        e164, found = check_recipient(raw_to, settings, countries=countries)
        problems += found
        to = e164 or None
    body: str | None = None
    raw_body = _string(payload, "body", problems)
    if raw_body is None and payload.get("body") is None:
        problems.append(Problem("body", "required", "the message text is required"))
    elif raw_body is not None:
        body = normalize_body(raw_body)
        found = check_body(body)
        problems += found
        body = None if found else body
    from_number: str | None = None
    raw_from = _string(payload, "from", problems)
    if raw_from is not None:
        from_number = to_e164(raw_from, settings.default_region)
        if from_number is None:
            problems.append(Problem("from", "invalid_number", "not a phone number"))
    conversation_id: UUID | None = None
    raw_conversation = _string(payload, "conversation_id", problems)
    if raw_conversation is not None:
        try:
            conversation_id = UUID(raw_conversation)
        except ValueError:
            problems.append(Problem("conversation_id", "invalid_uuid", "must be a UUID"))
    from_named = payload.get("from") is not None
    schedule, found = parse_schedule(payload, now)
    problems += found
    given = SendInput(
        to,
        body,
        from_number,
        conversation_id,
        from_named,
        priority=schedule.priority,
        send_at=schedule.send_at,
        expires_at=schedule.expires_at,
    )
    return given, problems


def prefixed(index: int, problems: list[Problem]) -> list[Problem]:
    """`problems` of the batch's item `index`, their fields named `messages[index].field`."""
    return [Problem(f"messages[{index}].{p.field}", p.code, p.message) for p in problems]


def parse_batch(
    payload: dict[str, Any],
    settings: Settings,
    *,
    now: datetime,
    countries: frozenset[str] | None = None,
) -> tuple[list[SendInput], list[Problem]]:
    """Each item through parse_send (all judged against the one `now`), and every problem of the
    envelope and the items at once."""
    problems = [
        Problem(name, "unknown_field", f"unknown field; expected {', '.join(BATCH_FIELDS)}")
        for name in payload
        if name not in BATCH_FIELDS
    ]
    items = payload.get("messages")
    if items is None:
        problems.append(Problem("messages", "required", "a list of messages is required"))
        return [], problems
    if not isinstance(items, list):
        problems.append(Problem("messages", "invalid_type", "must be a list of messages"))
        return [], problems
    if not items:
        problems.append(Problem("messages", "empty", "at least one message is required"))
        return [], problems
    if len(items) > MAX_BATCH:
        problems.append(
            Problem("messages", "too_many", f"{len(items)} messages, at most {MAX_BATCH}")
        )
        return [], problems
    parsed: list[SendInput] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            problems.append(Problem(f"messages[{index}]", "invalid_type", "must be an object"))
            parsed.append(SendInput(None, None, None, None, from_named=False))
            continue
        given, found = parse_send(item, settings, now=now, countries=countries)
        problems += prefixed(index, found)
        parsed.append(given)
    return parsed, problems


def judge_references(
    given: SendInput, named: S | None, default: S | None, pair: tuple[str, str] | None
) -> tuple[S | None, list[Problem]]:
    """The sender to use, and the problems with `from` and `conversation_id`, given what the
    database holds: `named` is the row of the `from` number (None if none or not looked up),
    `default` the default sender, `pair` the (from, to) of the named conversation (None if none)."""
    problems: list[Problem] = []
    sender: S | None = None
    if given.from_number is not None:
        if named is None:
            problems.append(Problem("from", "unknown_sender", "not one of our sender numbers"))
        elif not named.enabled:
            problems.append(Problem("from", "sender_disabled", "this sender is disabled"))
        else:
            sender = named
    elif not given.from_named:
        sender = default
        if sender is None:
            problems.append(
                Problem("from", "no_default_sender", "no default sender is set; name one")
            )
    if given.conversation_id is not None:
        if pair is None:
            problems.append(
                Problem("conversation_id", "unknown_conversation", "no such conversation")
            )
        elif sender is not None and pair != (sender.phone_number, given.to):
            problems.append(
                Problem(
                    "conversation_id",
                    "conversation_mismatch",
                    "the conversation is between another sender and recipient",
                )
            )
    return sender, problems
