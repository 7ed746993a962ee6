"""GET /openapi.json: the OpenAPI 3.1 description of what this server really does.

Written by hand next to the handlers it describes; tests/test_openapi.py runs schemathesis
against a live server with it, so a difference between the two fails the suite.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from api import openapi_webhooks
from shared.lifecycle import STATUSES
from shared.operations import MAX_PAGE
from shared.suppressions import MAX_PAGE as SUPPRESSIONS_MAX_PAGE
from shared.suppressions import REASONS as SUPPRESSION_REASONS
from shared.validation import (
    CLOCK_SKEW,
    MAX_BATCH,
    MAX_SCHEDULE_AHEAD,
    MAX_VALIDITY_SECONDS,
    PRIORITIES,
)

_NULLABLE_STRING: Final = {"type": ["string", "null"]}
_NULLABLE_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_REQUEST_ID: Final = {
    "description": "The request's X-Request-ID (the caller's, or one we made up).",
    "schema": {"type": "string"},
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": _REQUEST_ID},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}},
    }


def _json(description: str, ref: str, **headers: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"X-Request-ID": _REQUEST_ID, **headers},
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


_UNAUTHORIZED: Final = _error_response("Missing, malformed, unknown or revoked API key.")
_NOT_FOUND: Final = _error_response(
    "No message has this id (or the id is not a UUID, or, to a sender key, another key created "
    "it: the same answer)."
)
_MESSAGE_ID: Final = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
}
_NO_BODY: Final = {"description": "No body.", "headers": {"X-Request-ID": _REQUEST_ID}}
# Every route that reads or writes the database answers this while it cannot be reached.
_UNAVAILABLE: Final = {
    **_error_response("Database unreachable (code database_unavailable); try again later."),
    "headers": {
        "X-Request-ID": _REQUEST_ID,
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}},
    },
}

# Over a per-key limit (DESIGN section 12): nothing was written.
_LIMITED: Final = {
    **_error_response(
        "Over one of the API key's limits: rate_limited (send requests per UTC minute; a batch "
        "is one), daily_limit_reached (messages per UTC day; a batch counts each) or "
        "recipient_rate_limited (messages to one recipient in the trailing hour; `field` names "
        "the recipient). Nothing was written."
    ),
    "headers": {
        "X-Request-ID": _REQUEST_ID,
        "Retry-After": {
            "description": "Whole seconds, at least 1: to the end of the UTC minute or day, or "
            "until enough of the recipient's messages have left the trailing hour.",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        },
    },
}

_MESSAGE_PROPERTIES: Final[dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid"},
    # `received`: an inbound message (direction inbound), final as it arrives.
    "status": {"type": "string", "enum": sorted(STATUSES | {"received"})},
    "conversation_id": {"type": "string", "format": "uuid"},
    "direction": {
        "type": "string",
        "enum": ["outbound", "inbound"],
        "description": "inbound: texted to our number `to` by `from` (status received).",
    },
    "to": {"type": "string", "description": "Recipient, E.164."},
    "from": {"type": "string", "description": "Sender, E.164."},
    "body": {"type": "string"},
    "provider": {"type": "string", "enum": ["twilio", "signalwire"]},
    "provider_sid": _NULLABLE_STRING,
    "segments": {"type": "integer", "minimum": 1},
    "encoding": {"type": "string", "enum": ["GSM-7", "UCS-2"]},
    "attempts": {"type": "integer", "minimum": 0},
    "error": {
        "oneOf": [
            {"type": "null"},
            {
                "type": "object",
                "required": ["code", "category", "message"],
                "properties": {
                    "code": _NULLABLE_STRING,
                    "category": _NULLABLE_STRING,
                    "message": _NULLABLE_STRING,
                },
            },
        ]
    },
    "request_id": _NULLABLE_STRING,
    "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
    "submitted_at": _NULLABLE_TIME,
    "final_at": _NULLABLE_TIME,
    "priority": {"type": "string", "enum": list(PRIORITIES)},
    "send_at": {**_NULLABLE_TIME, "description": "Not sent before this time; null: at once."},
    "expires_at": {
        **_NULLABLE_TIME,
        "description": "Expired, never sent, if not handed to a provider by then; null: no limit.",
    },
}
# The schedule a send request may carry (POST /sms/send and each batch item).
_SCHEDULE_PROPERTIES: Final[dict[str, Any]] = {
    "priority": {
        "type": "string",
        "enum": list(PRIORITIES),
        "default": "normal",
        "description": "Within a sender's pace, higher priority goes first.",
    },
    "send_at": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 with an offset: not sent before this time. At most "
        f"{MAX_SCHEDULE_AHEAD.days} days ahead; up to {CLOCK_SKEW.seconds} s in the past is "
        "taken as now (400 in_past / too_far_ahead).",
    },
    "expires_at": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 with an offset: not handed to a provider after this time (the "
        "message becomes `expired`). After now and after send_at, at most "
        f"{MAX_VALIDITY_SECONDS} s after send_at (or now). Not with validity_seconds.",
    },
    "validity_seconds": {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_VALIDITY_SECONDS,
        "description": "Validity counted from send_at (or now); stored as expires_at. "
        "Not with expires_at.",
    },
}

_SCHEMAS: Final[dict[str, Any]] = {
    "Errors": {
        "type": "object",
        "required": ["errors"],
        "properties": {
            "errors": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "field": {"type": "string", "description": "The field at fault."},
                        "code": {"type": "string", "description": "Stable machine code."},
                        "message": {"type": "string"},
                    },
                },
            }
        },
    },
    "SendRequest": {
        "type": "object",
        "required": ["to", "body"],
        "additionalProperties": False,
        "properties": {
            "to": {"type": "string", "description": "Recipient phone number (E.164 preferred)."},
            "body": {"type": "string", "minLength": 1, "maxLength": 1600},
            "from": {"type": "string", "description": "One of our senders; default if absent."},
            "conversation_id": {"type": "string", "format": "uuid"},
            **_SCHEDULE_PROPERTIES,
        },
        "not": {"required": ["expires_at", "validity_seconds"]},
    },
    "SendAccepted": {
        "type": "object",
        "required": [
            "id",
            "status",
            "conversation_id",
            "to",
            "from",
            "provider",
            "provider_sid",
            "segments",
            "encoding",
            "created_at",
            "priority",
            "send_at",
            "expires_at",
        ],
        "properties": {
            **{
                k: _MESSAGE_PROPERTIES[k]
                for k in ("id", "conversation_id", "to", "from", "provider", "segments")
            },
            **{k: _MESSAGE_PROPERTIES[k] for k in ("priority", "send_at", "expires_at")},
            "encoding": _MESSAGE_PROPERTIES["encoding"],
            "created_at": _MESSAGE_PROPERTIES["created_at"],
            "status": {"type": "string", "enum": ["pending"]},
            "provider_sid": {"type": "null"},
        },
    },
    "BatchRequest": {
        "type": "object",
        "required": ["messages"],
        "additionalProperties": False,
        "properties": {
            "messages": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BATCH,
                "items": {"$ref": "#/components/schemas/SendRequest"},
            }
        },
    },
    "BatchAccepted": {
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array",
                "description": "One /sms/send 202 body per message, in request order.",
                "items": {"$ref": "#/components/schemas/SendAccepted"},
            }
        },
    },
    "MessageSummary": {
        "type": "object",
        "required": sorted(_MESSAGE_PROPERTIES),
        "properties": _MESSAGE_PROPERTIES,
    },
    "Message": {
        "type": "object",
        "required": [*sorted(_MESSAGE_PROPERTIES), "events"],
        "properties": {
            **_MESSAGE_PROPERTIES,
            "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "type", "occurred_at"],
        "properties": {
            "id": {
                "type": "integer",
                "description": "Order of the events; 0 for `created`, made from the message row.",
            },
            "type": {
                "type": "string",
                "enum": [
                    "created",
                    "attempt_started",
                    "attempt_result",
                    "callback",
                    "transition",
                    "alert",
                    "canceled",
                    "requeued",
                    "reconciled",
                    "sweep",
                    "reconcile_miss",
                    "duplicate_send_detected",
                    "held",
                    "expired",
                    "received",
                    "suppressed",
                    "recipient_revealed",
                ],
            },
            "attempt": {"type": ["integer", "null"]},
            "from_status": _NULLABLE_STRING,
            "to_status": _NULLABLE_STRING,
            "provider": _NULLABLE_STRING,
            "provider_sid": _NULLABLE_STRING,
            "error_code": _NULLABLE_STRING,
            "error_category": _NULLABLE_STRING,
            "detail": {"description": "Raw callback payload or structured detail."},
            "occurred_at": {"type": "string", "format": "date-time"},
        },
    },
    "MessagePage": {
        "type": "object",
        "required": ["messages", "next_cursor"],
        "properties": {
            "messages": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/MessageSummary"},
            },
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    },
    "Suppression": {
        "type": "object",
        "required": ["phone_number", "sender_number", "reason", "source_message_id", "created_at"],
        "properties": {
            "phone_number": {"type": "string", "description": "The recipient, E.164."},
            "sender_number": {
                "type": ["string", "null"],
                "description": "The sender it must not hear from; null = every sender.",
            },
            "reason": {"type": "string", "enum": list(SUPPRESSION_REASONS)},
            "source_message_id": {
                "type": ["string", "null"],
                "format": "uuid",
                "description": "The inbound STOP or refused message that caused it.",
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "SuppressionRequest": {
        "type": "object",
        "required": ["phone_number"],
        "additionalProperties": False,
        "properties": {
            "phone_number": {"type": "string", "description": "The recipient (E.164 preferred)."},
            "sender_number": {
                "type": ["string", "null"],
                "description": "Only this sender; absent or null: every sender.",
            },
        },
    },
    "SuppressionPage": {
        "type": "object",
        "required": ["suppressions", "next_cursor"],
        "properties": {
            "suppressions": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Suppression"},
            },
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Ready": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "warnings": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Configuration that keeps sends from going out, such as a "
                "provider with credentials but no sender number (the variable is named).",
            },
        },
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_CALLBACK_BODIES: Final[dict[str, Any]] = {
    "application/x-www-form-urlencoded": {
        "type": "object",
        "required": ["MessageSid", "MessageStatus"],
        "properties": {
            "MessageSid": {"type": "string"},
            "MessageStatus": {"type": "string"},
            "ErrorCode": {"type": "string"},
        },
    },
    "application/json": {"type": "object"},
}


def _callback(summary: str, media: list[str]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [],
            "requestBody": {
                "required": True,
                "content": {m: {"schema": _CALLBACK_BODIES[m]} for m in media},
            },
            "responses": {
                "204": {**_NO_BODY, "description": "Recorded (also for unknown messages)."},
                "400": {**_NO_BODY, "description": "Signed but unreadable."},
                "403": {**_NO_BODY, "description": "Bad or missing signature."},
                "413": {**_NO_BODY, "description": "Too large for a status callback."},
                "503": _UNAVAILABLE,
            },
        }
    }


_INBOUND_BODIES: Final[dict[str, Any]] = {
    "application/x-www-form-urlencoded": {
        "type": "object",
        "required": ["MessageSid", "From", "To"],
        "properties": {
            "MessageSid": {"type": "string"},
            "From": {"type": "string"},
            "To": {"type": "string"},
            "Body": {"type": "string"},
        },
    },
    "application/json": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "object"}, "params": {"type": "object"}},
    },
}


def _inbound(summary: str, media: list[str], answers: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": [],
            "requestBody": {
                "required": True,
                "content": {m: {"schema": _INBOUND_BODIES[m]} for m in media},
            },
            "responses": {
                "200": {
                    "description": "Stored (or stored before, for a webhook posted again), "
                    "keyword applied; the provider's empty reply: no auto-reply is sent.",
                    "headers": {"X-Request-ID": _REQUEST_ID},
                    "content": answers,
                },
                "400": {**_NO_BODY, "description": "Signed but not storable (no E.164 numbers)."},
                "403": {**_NO_BODY, "description": "Bad or missing signature; nothing written."},
                "413": {**_NO_BODY, "description": "Too large for a webhook."},
                "503": _UNAVAILABLE,
            },
        }
    }


_XML_ANSWER: Final = {"text/xml": {"schema": {"type": "string"}}}
_OPTED_OUT: Final = _error_response(
    "A recipient opted out of the sender (code recipient_opted_out; `field` names it); "
    "nothing was written."
)


def _operation(summary: str, response: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [_MESSAGE_ID],
            "responses": {
                "200": response,
                "401": _UNAUTHORIZED,
                "404": _NOT_FOUND,
                "409": _error_response("Not allowed in the message's state; `code` says why."),
                "503": _UNAVAILABLE,
            },
        }
    }


DOCUMENT: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "sms-outbox",
        "version": "0.1.0",
        "description": "Outbound SMS through a transactional PostgreSQL outbox. Errors are "
        '`{"errors": [{"field"?, "code", "message"}]}`.',
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {**_SCHEMAS, **openapi_webhooks.SCHEMAS},
    },
    "security": [{"bearer": []}],
    "paths": {
        "/sms/send": {
            "post": {
                "summary": "Queue one SMS (written with its outbox row in one transaction).",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}}
                    },
                },
                "responses": {
                    "202": _json(
                        "Queued (or the original answer to a replayed Idempotency-Key).",
                        "SendAccepted",
                        Location={"schema": {"type": "string"}},
                    ),
                    "400": _error_response("Every validation problem at once."),
                    "401": _UNAUTHORIZED,
                    "409": _error_response("Idempotency-Key already used for another request."),
                    "413": _error_response("Request body too large."),
                    "415": _error_response("Content-Type is not JSON."),
                    "422": _OPTED_OUT,
                    "429": _LIMITED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/sms/send/batch": {
            "post": {
                "summary": f"Queue up to {MAX_BATCH} SMS at once, all or nothing, one transaction.",
                "description": "Each message is checked as POST /sms/send checks one; any problem "
                "refuses the whole batch (400, fields named `messages[i].field`) and nothing is "
                "written. An Idempotency-Key header is refused (400 "
                "idempotency_key_not_supported): use POST /sms/send for replay safety.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/BatchRequest"}
                        }
                    },
                },
                "responses": {
                    "202": _json("Queued, every message.", "BatchAccepted"),
                    "400": _error_response("Every validation problem of every message at once."),
                    "401": _UNAUTHORIZED,
                    "413": _error_response("Request body too large (MAX_BATCH_REQUEST_BYTES)."),
                    "415": _error_response("Content-Type is not JSON."),
                    "422": _OPTED_OUT,
                    "429": _LIMITED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/sms/messages": {
            "get": {
                "summary": "Messages, newest first, filtered, in cursor pages (a sender key's "
                "own; an operator key's every key's).",
                "parameters": [
                    _query(
                        "status",
                        {"type": "string", "enum": sorted(STATUSES | {"received"})},
                        "Status.",
                    ),
                    _query("priority", {"type": "string", "enum": list(PRIORITIES)}, "Priority."),
                    _query("conversation_id", {"type": "string", "format": "uuid"}, "Thread."),
                    _query("to", {"type": "string"}, "Recipient number."),
                    _query("from", {"type": "string"}, "Sender number."),
                    _query(
                        "since", {"type": "string", "format": "date-time"}, "Created at or after."
                    ),
                    _query("until", {"type": "string", "format": "date-time"}, "Created before."),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 50},
                        "Page size.",
                    ),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page."),
                ],
                "responses": {
                    "200": _json("One page.", "MessagePage"),
                    "400": _error_response("Bad filter, limit or cursor (all listed at once)."),
                    "401": _UNAUTHORIZED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/sms/messages/{message_id}": {
            "get": {
                "summary": "A message, its error, attempts and event timeline.",
                "parameters": [_MESSAGE_ID],
                "responses": {
                    "200": _json("The message.", "Message"),
                    "401": _UNAUTHORIZED,
                    "404": _NOT_FOUND,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/sms/messages/{message_id}/cancel": _operation(
            "Cancel a pending message (409 not_pending or send_in_progress otherwise).",
            _json("Canceled; the message as it is now.", "Message"),
        ),
        "/sms/messages/{message_id}/retry": _operation(
            "Requeue a failed message with a fresh attempt budget (409 not_failed, or "
            "already_accepted_by_provider when the provider accepted it once).",
            _json("Requeued; the message as it is now.", "Message"),
        ),
        "/sms/suppressions": {
            "get": {
                "summary": "Suppressed recipients, newest first, in cursor pages.",
                "parameters": [
                    _query("phone_number", {"type": "string"}, "Only this recipient's."),
                    _query(
                        "limit",
                        {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": SUPPRESSIONS_MAX_PAGE,
                            "default": 50,
                        },
                        "Page size.",
                    ),
                    _query("cursor", {"type": "string"}, "next_cursor of the previous page."),
                ],
                "responses": {
                    "200": _json("One page.", "SuppressionPage"),
                    "400": _error_response("Bad number, limit or cursor (all listed at once)."),
                    "401": _UNAUTHORIZED,
                    "503": _UNAVAILABLE,
                },
            },
            "post": {
                "summary": "Stop texting a recipient, from one sender or from every sender "
                "(reason `api`). Idempotent: an existing suppression answers 200 as it is.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SuppressionRequest"}
                        }
                    },
                },
                "responses": {
                    "200": _json("Already suppressed; the existing suppression.", "Suppression"),
                    "201": _json("Suppressed.", "Suppression"),
                    "400": _error_response("Every validation problem at once."),
                    "401": _UNAUTHORIZED,
                    "413": _error_response("Request body too large."),
                    "415": _error_response("Content-Type is not JSON."),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/sms/suppressions/{phone_number}": {
            "delete": {
                "summary": "Lift a suppression: of `sender_number`, or without it the "
                "every-sender one.",
                "parameters": [
                    {
                        "name": "phone_number",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _query("sender_number", {"type": "string"}, "The sender it is for."),
                ],
                "responses": {
                    "204": {**_NO_BODY, "description": "Lifted."},
                    "400": _error_response("Bad number or parameter (all listed at once)."),
                    "401": _UNAUTHORIZED,
                    "403": _error_response(
                        "`recipient_opt_out`: the recipient opted out (STOP, or a provider's "
                        "opt-out refusal); only the recipient (START) or an operator key lifts it."
                    ),
                    "404": _error_response("No such suppression."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        **openapi_webhooks.paths(
            error=_error_response,
            ok=_json,
            no_body=_NO_BODY,
            unauthorized=_UNAUTHORIZED,
            unavailable=_UNAVAILABLE,
        ),
        "/healthz": {
            "get": {
                "summary": "The process answers.",
                "security": [],
                "responses": {"200": _json("Alive.", "Status")},
            }
        },
        "/readyz": {
            "get": {
                "summary": "The database answers too.",
                "security": [],
                "responses": {
                    "200": _json(
                        "Ready (with `warnings` when configuration needs a look).", "Ready"
                    ),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text exposition format).",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/webhook/twilio/status": _callback(
            "Twilio status callback (X-Twilio-Signature).", ["application/x-www-form-urlencoded"]
        ),
        "/webhook/signalwire/status": _callback(
            "SignalWire status callback (X-SignalWire-Signature).",
            ["application/json", "application/x-www-form-urlencoded"],
        ),
        "/webhook/twilio/inbound": _inbound(
            "A message texted to one of our Twilio numbers (its incoming-message webhook, "
            "X-Twilio-Signature); answered with empty TwiML.",
            ["application/x-www-form-urlencoded"],
            _XML_ANSWER,
        ),
        "/webhook/signalwire/inbound": _inbound(
            "A message texted to one of our SignalWire numbers: the SWML messaging webhook "
            "(JSON, answered with a SWML document that only receives) or the compatibility "
            "form (answered with empty cXML); X-SignalWire-Signature.",
            ["application/json", "application/x-www-form-urlencoded"],
            {"application/json": {"schema": {"type": "object"}}, **_XML_ANSWER},
        ),
    },
}


async def openapi_endpoint(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
