"""Request bodies: 413 while reading (a 10 MB body is never read whole), 415, malformed JSON."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.api_support import (  # noqa: F401 - fixtures are used by name
    TO,
    LiveServer,
    api_key_fixture,
    app_fixture,
    auth_fixture,
    client_fixture,
    live_fixture,
)

TEN_MB = 10 * 1024 * 1024
LIMIT = 64 * 1024  # settings.max_request_bytes default


def _raw_request(live: LiveServer, head: str, body_parts: Iterator[bytes]) -> bytes:
    """Send headers and some body bytes on a raw socket, then read the answer (5 s at most)."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=5) as sock:
        sock.sendall(head.encode())
        for part in body_parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
            answer.lower().partition(b"content-length: ")[2].partition(b"\r\n")[0] or 0
        ):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        return answer


def _head(api_key: str, framing: str) -> str:
    return (
        "POST /sms/send HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {api_key}\r\n{framing}\r\n\r\n"
    )


def test_declared_10mb_body_is_refused_before_reading(live: LiveServer, api_key: str) -> None:
    """A Content-Length of 10 MB gets 413 at once, though not one body byte was sent."""
    answer = _raw_request(live, _head(api_key, f"Content-Length: {TEN_MB}"), iter(()))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer


def test_streamed_body_is_refused_once_past_the_limit(live: LiveServer, api_key: str) -> None:
    """A chunked 10 MB upload gets 413 after 128 KiB were sent: the server stopped reading."""
    chunk = b"x" * 16384

    def parts() -> Iterator[bytes]:
        for _ in range(8):  # 128 KiB of the 10 MB; the rest is never sent
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    answer = _raw_request(live, _head(api_key, "Transfer-Encoding: chunked"), parts())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


@pytest.mark.parametrize("streamed", [False, True])
def test_limit_boundary(client: httpx.Client, auth: dict[str, str], streamed: bool) -> None:
    """A body of exactly the limit is read (and judged); one byte more is 413, either framing."""
    base = b'{"to": "' + TO.encode() + b'", "body": "hi"}'
    exact = base[:-1] + b" " * (LIMIT - len(base)) + b"}"

    def content(data: bytes) -> bytes | Iterator[bytes]:
        return iter([data[: len(data) // 2], data[len(data) // 2 :]]) if streamed else data

    assert client.post("/sms/send", content=content(exact), headers=auth).status_code == 202
    over = exact[:-1] + b" }"
    r = client.post("/sms/send", content=content(over), headers=auth)
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "too_large"


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_non_json_content_type_is_415(
    client: httpx.Client, api_key: str, content_type: str | None
) -> None:
    """Only JSON bodies are read; anything else is 415."""
    headers = {"Authorization": f"Bearer {api_key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = client.post("/sms/send", content=b'{"to": "x", "body": "y"}', headers=headers)
    assert r.status_code == 415
    assert r.json()["errors"][0]["code"] == "unsupported_media_type"


def test_json_with_charset_is_accepted(client: httpx.Client, api_key: str) -> None:
    """application/json; charset=utf-8 is JSON."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json; charset=utf-8",
    }
    body = b'{"to": "' + TO.encode() + b'", "body": "hi"}'
    assert client.post("/sms/send", content=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"to": ', "malformed_json"),
        (b"", "malformed_json"),
        (b"\xff\xfe{}", "malformed_json"),
        (b'{"to": NaN, "body": "x"}', "malformed_json"),
        (b'["to", "body"]', "invalid_type"),
        (b'"just a string"', "invalid_type"),
    ],
)
def test_malformed_json_is_400(
    client: httpx.Client, auth: dict[str, str], raw: bytes, code: str
) -> None:
    """Bodies that are not a JSON object are a 400 with a stable code."""
    r = client.post("/sms/send", content=raw, headers=auth)
    assert r.status_code == 400
    assert [e["code"] for e in r.json()["errors"]] == [code]
