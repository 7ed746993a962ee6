"""Twilio's error codes and status words, as data: what each means for the dispatcher.

Codes come from Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>). Codes
that arrive in status callbacks (30xxx) are classified too, for the record and the alerts.
"""

from __future__ import annotations

from typing import Final

from shared.providers.base import Category

R, P, A, C = Category.RETRYABLE, Category.PERMANENT, Category.AMBIGUOUS, Category.CONFIG

CODES: Final[dict[str, tuple[Category, str]]] = {
    # Account and request
    "20003": (C, "authentication failed: wrong account sid or auth token"),
    "20404": (C, "resource not found: wrong account sid or API base URL"),
    "20429": (R, "too many requests"),
    "20500": (A, "Twilio internal error: the message may have been created"),
    "20503": (A, "Twilio unavailable: the message may have been created"),
    # Sending (synchronous, on the create request)
    "21211": (P, "invalid 'To' number"),
    "21212": (C, "invalid 'From' number"),
    "21265": (P, "'To' is a short code"),
    "21266": (P, "'To' and 'From' are the same number"),
    "21408": (P, "sending to the 'To' number's region is not enabled on this account"),
    "21602": (P, "message body is required"),
    "21603": (C, "'From' number is required"),
    "21604": (P, "'To' number is required"),
    "21606": (C, "'From' is not a message-capable number of this account"),
    "21608": (C, "trial account: 'To' number is not verified"),
    "21610": (P, "recipient has opted out (STOP)"),
    "21611": (R, "'From' number has too many queued messages"),
    "21612": (P, "'To' number is not reachable via SMS from this 'From'"),
    "21614": (P, "'To' number is not a mobile number"),
    "21617": (P, "body exceeds 1600 characters"),
    "21659": (C, "'From' is not a Twilio number"),
    "21660": (C, "'From' number does not belong to this account"),
    "21661": (C, "'From' number is not SMS-capable"),
    # Delivery (reported in status callbacks)
    "30001": (R, "queue overflow: sent too fast"),
    "30002": (C, "account suspended"),
    "30003": (P, "unreachable destination handset"),
    "30004": (P, "message blocked by the recipient or carrier"),
    "30005": (P, "unknown destination handset"),
    "30006": (P, "landline or unreachable carrier"),
    "30007": (P, "filtered by the carrier as spam"),
    "30008": (R, "unknown delivery error"),
    "30010": (C, "message price exceeds the account's max price"),
    "30022": (R, "10DLC throughput limit exceeded"),
    "30032": (C, "toll-free number is not verified"),
    "30034": (C, "10DLC number is not registered to a campaign"),
}

# What no code names: the HTTP status or the transport failure.
HTTP_429: Final = (R, "rate limited (HTTP 429)")
HTTP_401: Final = (C, "authentication failed (HTTP 401)")
HTTP_5XX: Final = (A, "server error after the request was sent: the message may exist")
# Refusals that mean the recipient opted out of the sender (texted STOP): the dispatcher suppresses
# the recipient for that sender (sms_suppressions), so no later message is even tried.
OPT_OUT: Final = frozenset({"21610"})
CONNECT_ERROR: Final = (R, "could not connect: the request never left")
READ_TIMEOUT: Final = (A, "no answer in time after the request was sent: the message may exist")
UNCLASSIFIED_4XX: Final = (P, "request refused with an unlisted error")

# Twilio's status words -> our lifecycle status (shared/lifecycle.py). None: not a status of ours.
STATUSES: Final[dict[str, str | None]] = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sending",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "failed": "failed",
    "read": "read",
    # Canceled at Twilio (a scheduled message) after we handed it over: it will never be sent,
    # so for the message's owner it has failed; our own `canceled` means "withdrawn before sending".
    "canceled": "failed",
    # Some parts (segments/recipients) arrived and some did not: not a clean delivery.
    "partially_delivered": "undelivered",
    # Inbound words never describe an outbound message.
    "receiving": None,
    "received": None,
}


def classify(code: str | int | None) -> tuple[Category, str] | None:
    """The category and reason of a Twilio error code, or None if the table does not list it."""
    return CODES.get(str(code)) if code is not None else None
