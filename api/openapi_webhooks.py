"""The /sms/webhooks part of the OpenAPI document (api/openapi.py merges it): customer status
webhook endpoints, and the webhooks they receive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from shared.webhook_events import EVENT_TYPES
from shared.webhook_registration import MAX_ENDPOINTS_PER_KEY, TEST_EVENT
from shared.webhook_targets import MAX_URL_LENGTH

_TIME: Final = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: Final[dict[str, Any]] = {
    "WebhookEndpointRequest": {
        "type": "object",
        "required": ["url"],
        "additionalProperties": False,
        "properties": {
            "url": {
                "type": "string",
                "format": "uri",
                "maxLength": MAX_URL_LENGTH,
                "description": "Where events are POSTed: https (http only to loopback, or with "
                "ALLOW_HTTP_WEBHOOKS), a host whose addresses are all public (unless "
                "WEBHOOK_ALLOW_PRIVATE_URLS), no credentials.",
            },
            "events": {
                "type": ["array", "null"],
                "items": {"type": "string", "enum": list(EVENT_TYPES)},
                "description": "Event types to receive; absent, null or empty: every type.",
            },
        },
    },
    "WebhookEndpoint": {
        "type": "object",
        "required": [
            "id",
            "api_key_id",
            "url",
            "events",
            "enabled",
            "disabled_reason",
            "disabled_at",
            "created_at",
            "previous_secret_expires_at",
            "health",
        ],
        "properties": {
            "id": {"type": "integer"},
            "api_key_id": {"type": "integer"},
            "url": {"type": "string"},
            "events": {
                "type": "array",
                "items": {"type": "string", "enum": list(EVENT_TYPES)},
                "description": "Empty: every event type.",
            },
            "enabled": {"type": "boolean"},
            "disabled_reason": {
                "type": ["string", "null"],
                "description": "Why nothing is sent to it any more: it answered 410 Gone, or "
                "failed for WEBHOOK_RETRY_HOURS.",
            },
            "disabled_at": _TIME,
            "created_at": {"type": "string", "format": "date-time"},
            "previous_secret_expires_at": {
                **_TIME,
                "description": "After a rotation: until then deliveries carry a signature with "
                "the previous secret too.",
            },
            "health": {
                "type": "object",
                "required": [
                    "last_success_at",
                    "last_failure_at",
                    "last_error",
                    "failing_since",
                    "pending",
                    "oldest_pending_seconds",
                ],
                "properties": {
                    "last_success_at": _TIME,
                    "last_failure_at": _TIME,
                    "last_error": {"type": ["string", "null"]},
                    "failing_since": {
                        **_TIME,
                        "description": "First failure since the last success; null while healthy.",
                    },
                    "pending": {"type": "integer", "minimum": 0},
                    "oldest_pending_seconds": {"type": ["number", "null"]},
                },
            },
        },
    },
    "WebhookEndpointWithSecret": {
        "allOf": [
            {"$ref": "#/components/schemas/WebhookEndpoint"},
            {
                "type": "object",
                "required": ["secret"],
                "properties": {
                    "secret": {
                        "type": "string",
                        "pattern": "^whsec_[A-Za-z0-9+/]+={0,2}$",
                        "description": "The Standard Webhooks signing secret; shown only here.",
                    }
                },
            },
        ]
    },
    "WebhookEndpointList": {
        "type": "object",
        "required": ["webhooks"],
        "properties": {
            "webhooks": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/WebhookEndpoint"},
            }
        },
    },
    "WebhookTest": {
        "type": "object",
        "required": ["endpoint_id", "type", "webhook_id"],
        "properties": {
            "endpoint_id": {"type": "integer"},
            "type": {"type": "string", "enum": [TEST_EVENT]},
            "webhook_id": {
                "type": "string",
                "description": "The webhook-id header the test delivery carries.",
            },
        },
    },
}

_ENDPOINT_ID: Final = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


def paths(
    *,
    error: Callable[[str], dict[str, Any]],
    ok: Callable[[str, str], dict[str, Any]],
    no_body: dict[str, Any],
    unauthorized: dict[str, Any],
    unavailable: dict[str, Any],
) -> dict[str, Any]:
    """The /sms/webhooks paths, built with the document's own response helpers."""
    not_found = error(
        "No webhook endpoint has this id (or, to a sender key, another key's: the same answer)."
    )
    return {
        "/sms/webhooks": {
            "get": {
                "summary": "The key's webhook endpoints (an operator key: every key's) with "
                "their delivery health; never a secret.",
                "responses": {
                    "200": ok("Oldest first.", "WebhookEndpointList"),
                    "401": unauthorized,
                    "503": unavailable,
                },
            },
            "post": {
                "summary": "Register a URL for the status webhooks of the key's messages "
                "(Standard Webhooks). The answer carries the signing secret, this once.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/WebhookEndpointRequest"}
                        }
                    },
                },
                "responses": {
                    "201": ok("Registered.", "WebhookEndpointWithSecret"),
                    "400": error(
                        "Every problem at once, each naming its field: invalid_url, "
                        "https_required, unresolvable_host, address_not_allowed (a private, "
                        "loopback, link-local, multicast or reserved address), unknown_event, "
                        "unknown_field. Nothing was written."
                    ),
                    "401": unauthorized,
                    "409": error(
                        f"endpoint_limit_reached: the key has {MAX_ENDPOINTS_PER_KEY} endpoints."
                    ),
                    "413": error("Request body too large."),
                    "415": error("Content-Type is not JSON."),
                    "503": unavailable,
                },
            },
        },
        "/sms/webhooks/{endpoint_id}": {
            "delete": {
                "summary": "Remove an endpoint; its pending deliveries are dropped.",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "204": {**no_body, "description": "Removed."},
                    "401": unauthorized,
                    "404": not_found,
                    "503": unavailable,
                },
            }
        },
        "/sms/webhooks/{endpoint_id}/rotate-secret": {
            "post": {
                "summary": "A new signing secret, returned this once; the previous one keeps "
                "signing beside it for 24 h (until previous_secret_expires_at).",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "200": ok("Rotated.", "WebhookEndpointWithSecret"),
                    "401": unauthorized,
                    "404": not_found,
                    "503": unavailable,
                },
            }
        },
        "/sms/webhooks/{endpoint_id}/test": {
            "post": {
                "summary": f"Queue a `{TEST_EVENT}` delivery to the endpoint, signed and "
                "retried as every event is.",
                "parameters": [_ENDPOINT_ID],
                "responses": {
                    "202": ok("Queued.", "WebhookTest"),
                    "401": unauthorized,
                    "404": not_found,
                    "409": error("endpoint_disabled: nothing is sent to a disabled endpoint."),
                    "503": unavailable,
                },
            }
        },
    }
