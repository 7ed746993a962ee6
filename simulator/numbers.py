"""Test numbers (README: Test numbers): which sends each provider refuses, and the error texts."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    """How a provider refuses a send: HTTP status, its error code and text, the field at fault."""

    status: int
    code: str
    message: str
    attribute: str  # "to" or "from"


# Twilio's magic test numbers and the codes its API returns for them.
TWILIO_TO: dict[str, Rejection] = {
    "+15005550001": Rejection(400, "21211", "The 'To' number is not a valid phone number.", "to"),
    "+15005550002": Rejection(
        400, "21612", "The 'To' phone number is not currently reachable via SMS.", "to"
    ),
    "+15005550003": Rejection(
        400,
        "21408",
        "Permission to send an SMS has not been enabled for the region of the 'To' number.",
        "to",
    ),
    "+15005550004": Rejection(400, "21610", "Attempt to send to unsubscribed recipient", "to"),
    "+15005550009": Rejection(400, "21614", "'To' number is not a valid mobile number", "to"),
}
TWILIO_FROM: dict[str, Rejection] = {
    "+15005550001": Rejection(
        400, "21212", "The 'From' number is not a valid phone number or shortcode.", "from"
    ),
    "+15005550007": Rejection(
        400,
        "21606",
        "The 'From' phone number provided is not a valid, message-capable Twilio phone number.",
        "from",
    ),
    "+15005550008": Rejection(
        400,
        "21611",
        "This 'From' number has exceeded the maximum number of queued messages",
        "from",
    ),
}

# The same numbers on SignalWire's native Messaging API, which answers 422 with string codes.
# `not_routable` is documented (https://developer.signalwire.com/rest/overview/error-codes/#not_routable,
# "check geographic permissions and the destination number"); the others are the native codes our
# issue names. Its opt-out refusal is `message_blocked_by_number` ("The destination number blocked
# messages from the sending number. No further messages can be delivered to this recipient from
# this number", error-codes page, signalwire/docs 668371b); it has no queue-full code.
SIGNALWIRE_TO: dict[str, Rejection] = {
    "+15005550001": Rejection(422, "invalid_to_number", "The 'to' number is not valid.", "to"),
    "+15005550002": Rejection(
        422, "not_routable", "Unable to locate a route to the destination number.", "to"
    ),
    "+15005550003": Rejection(
        422,
        "not_routable",
        "Unable to locate a route to the destination number. Please check geographic permissions.",
        "to",
    ),
    "+15005550004": Rejection(
        422, "message_blocked_by_number", "The recipient has opted out of messages.", "to"
    ),
    "+15005550009": Rejection(
        422, "invalid_to_number", "The 'to' number cannot receive SMS.", "to"
    ),
}
SIGNALWIRE_FROM: dict[str, Rejection] = {
    "+15005550001": Rejection(
        422, "invalid_from_number", "The 'from' number is not a valid number.", "from"
    ),
    "+15005550007": Rejection(
        422, "from_number_not_owned", "The 'from' number does not belong to this project.", "from"
    ),
    "+15005550008": Rejection(
        429, "rate_limit_exceeded", "The 'from' number is sending too fast; try later.", "from"
    ),
}


def rejection(provider: str, from_number: str, to_number: str) -> Rejection | None:
    """The refusal a send from->to gets at this provider, or None if it is accepted."""
    by_from, by_to = (
        (TWILIO_FROM, TWILIO_TO) if provider == "twilio" else (SIGNALWIRE_FROM, SIGNALWIRE_TO)
    )
    return by_from.get(from_number) or by_to.get(to_number)


# Delivery error codes (Twilio's error dictionary; SignalWire reports the same numbers) and the
# text both providers put in `error_message` beside them.
DELIVERY_ERRORS: dict[str, str] = {
    "30001": "Queue overflow",
    "30002": "Account suspended",
    "30003": "Unreachable destination handset",
    "30004": "Message blocked",
    "30005": "Unknown destination handset",
    "30006": "Landline or unreachable carrier",
    "30007": "Message filtered",
    "30008": "Unknown error",
}


def error_message(code: str | None) -> str | None:
    """The description beside an error code in message bodies and callbacks; None without one."""
    if code is None:
        return None
    return DELIVERY_ERRORS.get(code, f"Message delivery failed with error {code}")
