"""SignalWire's error codes and status words, as data: what each means for the dispatcher.

The native Messaging API answers 422 with `errors[].code` strings; delivery failures in status
callbacks carry the numeric codes of SignalWire's compatibility table, some of which mean something
else than the same number at Twilio (see the notes below), so this table is separate from Twilio's.
Sources: https://developer.signalwire.com/rest/overview/error-codes (native strings),
https://developer.signalwire.com/rest/compatibility-api/overview/error-codes (numeric table, as in
github.com/signalwire/docs website/docs/main/rest/compatibility-api/overview/error-codes.mdx),
https://developer.signalwire.com/guides/how-to-troubleshoot-common-messaging-issues (30001...).
"""

from __future__ import annotations

from typing import Final

from shared.providers.base import Category

R, P, A, C = Category.RETRYABLE, Category.PERMANENT, Category.AMBIGUOUS, Category.CONFIG

CODES: Final[dict[str, tuple[Category, str]]] = {
    # Native API string codes
    "rate_limit_exceeded": (R, "rate limited"),
    "cannot_process": (R, "SignalWire cannot process the request right now"),
    "invalid_to_number": (P, "invalid 'to' number"),
    "not_routable": (P, "no route to the destination (number or geographic permissions)"),
    "message_blocked_by_number": (P, "recipient blocked or opted out"),
    "invalid_parameter": (P, "request refused as invalid"),
    "missing_required_parameter": (P, "a required field is missing"),
    "invalid_from_number": (C, "invalid 'from' number"),
    "from_number_not_owned": (C, "'from' number does not belong to this project"),
    "account_limit_exceeded": (C, "the account must be upgraded"),
    # Numeric codes (compatibility table) shared in meaning with Twilio
    "21210": (C, "'from' number not verified"),
    "21212": (C, "number not in E.164 format"),
    "21217": (P, "destination is not a valid phone number"),
    "21219": (P, "'to' number not verified (trial)"),
    "21601": (C, "'from' number is not SMS-capable"),
    "21602": (P, "message body is required"),
    "21603": (C, "'from' number is required"),
    "21604": (P, "'to' number is required"),
    "21610": (P, "recipient has unsubscribed"),
    "21611": (R, "'from' number has too many queued messages"),
    "21617": (P, "body exceeds 1600 characters"),
    "21717": (C, "number is not assigned to a 10DLC campaign"),
    "30002": (C, "account suspended"),
    "30003": (P, "unreachable destination handset"),
    "30004": (P, "message blocked or opted out"),
    "30005": (P, "unknown destination handset"),
    "30006": (P, "landline or unreachable carrier"),
    "30007": (P, "marked as spam"),
    "30008": (R, "unknown delivery error"),
    "30010": (C, "message price exceeds the max price"),
    "30022": (R, "campaign registry throughput limit exceeded"),
    "30027": (R, "T-Mobile daily message limit reached"),
    # Numbers whose meaning differs from Twilio's:
    # 30001 is "Exceeded Validity Period" here (queued too long behind the number's throughput,
    # default validity 4 h: SignalWire's troubleshooting guide), "Queue overflow" at Twilio.
    "30001": (R, "validity period expired in SignalWire's queue: sent faster than allowed"),
    # 21408 is "The callback URL is not set" in SignalWire's cXML error list
    # (github.com/signalwire/docs-legacy issue 586), a region permission at Twilio: ours to fix.
    "21408": (C, "status callback URL missing"),
    # 21606 and 21612 are not in SignalWire's published table; its own words for Twilio's meanings
    # are 21601 (from not SMS-capable) and 21217 / not_routable. Should they appear, treat them as
    # the sender problem and the unreachable recipient they name in the compatibility API.
    "21606": (C, "'from' number cannot send to this destination"),
    "21612": (P, "'to' number cannot be reached from this 'from'"),
}

HTTP_429: Final = (R, "rate limited (HTTP 429)")
# Refusals that mean the recipient opted out of the sender: the native `message_blocked_by_number`
# ("the destination number blocked messages from the sending number. No further messages can be
# delivered to this recipient from this number"; carrier blocks are `message_blocked_by_carrier`)
# and the compatibility table's 21610 ("recipient has unsubscribed"). 30004 ("message blocked or
# opted out", a delivery error) also covers carrier blocks: it fails the message only.
OPT_OUT: Final = frozenset({"message_blocked_by_number", "21610"})
HTTP_401: Final = (C, "authentication failed: wrong project id or API token (HTTP 401)")
HTTP_404: Final = (C, "not found: wrong space or API path (HTTP 404)")
HTTP_5XX: Final = (A, "server error after the request was sent: the message may exist")
CONNECT_ERROR: Final = (R, "could not connect: the request never left")
READ_TIMEOUT: Final = (A, "no answer in time after the request was sent: the message may exist")
UNCLASSIFIED_4XX: Final = (P, "request refused with an unlisted error")

# SignalWire's status words -> our lifecycle status (shared/lifecycle.py).
STATUSES: Final[dict[str, str | None]] = {
    "queued": "queued",
    "initiated": "sending",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "read",
    "received": None,  # inbound
}


def classify(code: str | int | None) -> tuple[Category, str] | None:
    """The category and reason of a SignalWire error code, or None if the table does not list it."""
    return CODES.get(str(code)) if code is not None else None
