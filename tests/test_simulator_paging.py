"""The providers' list endpoints through the real SDKs: filters, newest first, every page."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from signalwire.rest import RestClient
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from tests.fixtures_sim import SIM_TWILIO_NUMBER, SimHandle, wait_until

T = TypeVar("T")
PAIR_TO = "+15551234500"


class _HeaderAuthClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """The SDK's aiohttp client with Basic credentials as a header (aiohttp 3.14 deprecates the
    BasicAuth object the SDK builds, and warnings are errors here)."""

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        user, password = kwargs.pop("auth")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        kwargs["headers"] = {**(kwargs.get("headers") or {}), "Authorization": f"Basic {token}"}
        return await super().request(method, url, **kwargs)


def with_twilio(sim: SimHandle, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(messages)` against the async twilio SDK pointed at the simulator."""

    async def main() -> T:
        http = _HeaderAuthClient()
        client = Client(
            sim.config.twilio_account_sid,
            sim.config.twilio_auth_token,
            environment={},
            http_client=http,
        )
        client.api.base_url = sim.base_url
        try:
            return await work(client.api.v2010.accounts(sim.config.twilio_account_sid).messages)
        finally:
            await http.close()

    return asyncio.run(main())


def send_twilio(sim: SimHandle, count: int, to: str = PAIR_TO, **form: str) -> list[str]:
    """Create `count` Twilio messages, oldest first; their sids in that order."""
    return [sim.post_twilio(To=to, Body=f"n{i}", **form).json()["sid"] for i in range(count)]


def test_twilio_sdk_lists_every_page_of_a_pair(sim: SimHandle) -> None:
    """list_async with no limit follows next_page_uri to the end: 65 messages of a pair with
    PageSize 50, newest first, none from other pairs, none twice."""
    mine = send_twilio(sim, 65)
    send_twilio(sim, 3, to="+15551234599")  # another recipient
    send_twilio(sim, 2, From="+15005550016")  # another sender (not a refused test number)

    async def work(messages: Any) -> tuple[list[Any], list[str]]:
        listed = await messages.list_async(to=PAIR_TO, from_=SIM_TWILIO_NUMBER, page_size=50)
        streamed = [
            m.sid
            async for m in await messages.stream_async(
                to=PAIR_TO, from_=SIM_TWILIO_NUMBER, page_size=50
            )
        ]
        return listed, streamed

    listed, streamed = with_twilio(sim, work)
    assert [m.sid for m in listed] == list(reversed(mine)) == streamed
    created = [m.date_created for m in listed]
    assert created == sorted(created, reverse=True) and created[0].tzinfo is not None


def test_twilio_paging_is_stable_while_messages_arrive(sim: SimHandle) -> None:
    """Messages created between two page requests neither shift nor repeat the next page."""
    older = send_twilio(sim, 25)

    async def work(messages: Any) -> list[str]:
        first = await messages.page_async(to=PAIR_TO, page_size=10)
        seen = [m.sid for m in first]
        send_twilio(sim, 5)  # newer than everything listed so far
        page = await first.next_page_async()
        while page is not None:
            seen += [m.sid for m in page]
            page = await page.next_page_async()
        return seen

    assert with_twilio(sim, work) == list(reversed(older))


def test_twilio_previous_page_returns_the_page_before(sim: SimHandle) -> None:
    """previous_page_uri leads back to the page the client came from."""
    send_twilio(sim, 7)

    async def work(messages: Any) -> tuple[list[str], list[str]]:
        first = await messages.page_async(to=PAIR_TO, page_size=3)
        second = await first.next_page_async()
        back = await second.previous_page_async()
        return [m.sid for m in first], [m.sid for m in back]

    first, back = with_twilio(sim, work)
    assert first == back and len(first) == 3


def test_twilio_date_sent_filters(sim: SimHandle) -> None:
    """DateSent, DateSent< and DateSent> filter on date_sent, which a queued message lacks."""
    sim.configure(callback_delay=0)
    sent = send_twilio(sim, 2)
    wait_until(lambda: all(r["status"] == "delivered" for r in sim.messages()))
    sim.configure(callback_extra_delay=60)  # this one stays queued: no date_sent yet
    send_twilio(sim, 1)
    now = datetime.now(UTC)
    today = now.date()

    async def work(messages: Any) -> dict[str, set[str]]:
        async def sids(**filters: Any) -> set[str]:
            return {m.sid for m in await messages.list_async(to=PAIR_TO, **filters)}

        return {
            "all": await sids(),
            "today": await sids(date_sent=now),  # the SDK sends a time; Twilio keeps the day
            "after_past": await sids(date_sent_after=now - timedelta(minutes=5)),
            "after_future": await sids(date_sent_after=now + timedelta(minutes=5)),
            "before_future": await sids(date_sent_before=now + timedelta(minutes=5)),
            "before_past": await sids(date_sent_before=now - timedelta(minutes=5)),
        }

    found = with_twilio(sim, work)
    assert len(found["all"]) == 3
    assert found["today"] == found["after_past"] == found["before_future"] == set(sent)
    assert found["after_future"] == found["before_past"] == set()
    day_only = sim.get(sim.twilio_messages_path(), "twilio", **{"DateSent<": today.isoformat()})
    assert {m["sid"] for m in day_only.json()["messages"]} == set(sent)  # "on and before"


def test_signalwire_sdk_paginates_every_log_entry(sim: SimHandle) -> None:
    """paginate() follows links.next to the end, newest first, keeping the created_after filter."""
    ids = [sim.post_signalwire(body=f"n{i}").json()["id"] for i in range(120)]
    client = RestClient(
        project=sim.config.signalwire_project,
        token=sim.config.signalwire_token,
        host=f"127.0.0.1:{sim.port}",
    )
    day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    entries = list(client.logs.messages.paginate(created_after=day, page_size=50))
    assert [e["id"] for e in entries] == list(reversed(ids))
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert list(client.logs.messages.paginate(created_after=tomorrow, page_size=50)) == []
