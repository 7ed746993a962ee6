"""Re-extract the vendored schema subsets from the providers' OpenAPI files (run by hand).

    python tests/provider_schemas/extract.py /path/to/provider-specs

Checks each source file's sha256 against the one recorded below, resolves `$ref`s, drops prose
(description, examples, x-twilio) and writes twilio_api_v2010.json and
signalwire_rest_openapi.json beside this file. The tests read only those two outputs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TWILIO = {
    "file": "twilio_api_v2010.json",
    "origin": "github.com/twilio/twilio-oai spec/json/twilio_api_v2010.json"
    " @ d50069b44ea8cd23141385bdb6db48f16ff75bb5 (OpenAPI 3.0.1)",
    "sha256": "99cae87a6bb1725f71363364cbd30282a13140374b2d5f9bdd5bdfa5d4c8a6d7",
}
SIGNALWIRE = {
    "file": "signalwire_rest_openapi.json",
    "origin": "github.com/signalwire/docs fern/apis/signalwire-rest/openapi.yaml"
    " @ 668371b217817d9037657f5079d2345945ad9331 (OpenAPI 3.1, YAML converted to JSON)",
    "sha256": "8a8cd283658c932278a5245022e65c15e16b744d581a49bbfe12163e3fb1697f",
}
_PROSE = {"description", "examples", "example", "x-twilio", "summary", "title"}


def load(specs: Path, source: dict[str, str]) -> Any:
    raw = (specs / source["file"]).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != source["sha256"]:
        raise SystemExit(f"{source['file']}: sha256 {digest}, expected {source['sha256']}")
    return json.loads(raw)


def resolve(node: Any, spec: Any, openapi30: bool) -> Any:
    """`node` with every local $ref inlined, prose dropped, and (3.0) `nullable` as a null type."""
    if isinstance(node, list):
        return [resolve(item, spec, openapi30) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return resolve(target, spec, openapi30)
    out = {
        k: resolve(v, spec, openapi30)
        for k, v in node.items()
        if k not in _PROSE and k != "properties"
    }
    if "properties" in node:  # property names are data, even one called "description"
        out["properties"] = {
            name: resolve(value, spec, openapi30) for name, value in node["properties"].items()
        }
    if openapi30 and out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
    return out


def twilio(specs: Path) -> dict[str, Any]:
    spec = load(specs, TWILIO)
    messages = spec["paths"]["/2010-04-01/Accounts/{AccountSid}/Messages.json"]
    message = resolve(spec["components"]["schemas"]["api.v2010.account.message"], spec, True)
    # Every Message example in the spec carries all 20 properties (SOURCES.md): require them.
    message["required"] = sorted(message["properties"])
    listing = resolve(
        messages["get"]["responses"]["200"]["content"]["application/json"]["schema"], spec, True
    )
    listing["required"] = sorted(listing["properties"])  # every list example has all 9 keys
    recording = spec["paths"][
        "/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}/Recordings/{Sid}.json"
    ]
    error = resolve(
        recording["post"]["responses"]["408"]["content"]["application/json"]["schema"], spec, True
    )
    error["required"] = sorted(error["properties"])
    return {
        "$comment": _comment(TWILIO),
        "schemas": {
            "message": {"$schema": DRAFT, **message},
            "message_list": {"$schema": DRAFT, **listing},
            "error": {"$schema": DRAFT, **error},
        },
    }


def signalwire(specs: Path) -> dict[str, Any]:
    spec = load(specs, SIGNALWIRE)
    schemas = spec["components"]["schemas"]
    callback = spec["webhooks"]["messageStatusCallback"]["post"]["requestBody"]["content"]
    inbound = spec["webhooks"]["inboundMessageWebhook"]["post"]["requestBody"]["content"]
    picked = {
        "message": schemas["Message.Message"],
        "create_422": schemas["Message.MessagesCreateStatusCode422"],
        "log_list_422": schemas["Message.MessageLogsListStatusCode422"],
        "bad_request_400": schemas["Types.StatusCodes.StatusCode400"],
        "unauthorized_401": schemas["Types.StatusCodes.StatusCode401"],
        "not_found_404": schemas["Types.StatusCodes.StatusCode404"],
        "server_error_500": schemas["Types.StatusCodes.StatusCode500"],
        "message_log": schemas["Message.MessageLog"],
        "log_retrieve": schemas["Message.LogRetrieveResponse"],
        "log_list": schemas["Message.LogListResponse"],
        "status_callback": callback["application/json"]["schema"],
        "inbound_message": inbound["application/json"]["schema"],
    }
    return {
        "$comment": _comment(SIGNALWIRE),
        "schemas": {
            name: {"$schema": DRAFT, **resolve(schema, spec, False)}
            for name, schema in picked.items()
        },
    }


def _comment(source: dict[str, str]) -> str:
    return (
        f"Subset of {source['file']} ({source['origin']}), sha256 {source['sha256']}."
        " Written by tests/provider_schemas/extract.py; see README.md. Do not edit by hand."
    )


def main(argv: list[str]) -> None:
    specs = Path(argv[1] if len(argv) > 1 else "../shared/provider-specs")
    for name, build in (
        ("twilio_api_v2010.json", twilio),
        ("signalwire_rest_openapi.json", signalwire),
    ):
        text = json.dumps(build(specs), indent=1, ensure_ascii=False, sort_keys=True)
        (HERE / name).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv)
