"""The ops console in a real browser (chromium, headless) against the live API on a real
database with seeded traffic. Each test signs in through the form."""

from __future__ import annotations

from datetime import UTC, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from shared.config import Settings
from tests.api_support import LiveServer
from tests.browser.conftest import NARROW, Seeded, Watched, run_dispatcher, sign_in
from tests.fixtures_sim import SimHandle

PAGES = (
    "/ops",
    "/ops/messages",
    "/ops/failed",
    "/ops/suppressions",
    "/ops/webhooks",
    "/ops/senders",
)


def cells(page: Any, row_selector: str) -> dict[str, str]:
    """{data-col: text} of the cells of the one row matching `row_selector`."""
    row = page.locator(row_selector)
    assert row.count() == 1, row_selector
    found: dict[str, str] = {}
    for cell in row.locator("[data-col]").all():
        found[str(cell.get_attribute("data-col"))] = cell.inner_text().strip()
    return found


def plain(value: Any) -> str:
    """A view's value as the console prints it (render.number)."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def view(db: psycopg.Connection[Any], sql: str) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql).fetchall()


def test_a_bad_key_is_refused(browser_page: Watched, server: LiveServer) -> None:
    """A key we never issued is refused with a message naming the field; no session opens."""
    response = sign_in(browser_page, server.url, "surely-not-a-key")
    assert response.status == 401
    page = browser_page.page
    assert "not a valid API key" in page.locator("#key-error").inner_text()
    assert all(c["name"] != "ops_session" for c in page.context.cookies())


def test_a_sender_key_gets_403(browser_page: Watched, server: LiveServer, sender_key: str) -> None:
    """A sender key is refused with 403 and told an operator key is needed."""
    response = sign_in(browser_page, server.url, sender_key)
    assert response.status == 403
    assert "operator key" in browser_page.page.locator("#key-error").inner_text()


def test_overview_numbers_equal_the_dba_views(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
) -> None:
    """Queue depth by kind and state and the last hour's outcomes per provider are the numbers
    of sms_queue_health and sms_provider_outcomes_1h; the senders page shows sms_sender_pace's."""
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    assert page.url.endswith("/ops")
    queue = view(db, "SELECT * FROM sms_queue_health")
    assert queue, "seeded traffic left nothing queued"
    for row in queue:
        shown = cells(
            page, f'#queue-health tr[data-kind="{row["kind"]}"][data-state="{row["state"]}"]'
        )
        assert shown["depth"] == plain(row["depth"]) and shown["due"] == plain(row["due"])
        assert shown["expired_leases"] == plain(row["expired_leases"])
        # The age grows while we read: the page was rendered a moment before this query.
        assert abs(Decimal(shown["oldest_due_seconds"]) - row["oldest_due_seconds"]) < 5
    assert page.locator("[data-metric=queue-depth]").inner_text() == str(
        sum(r["depth"] for r in queue if r["kind"] == "send_sms")
    )
    outcomes = view(db, "SELECT * FROM sms_provider_outcomes_1h")
    assert outcomes and outcomes[0]["sent"] == len(seeded.sent)
    for row in outcomes:
        shown = cells(page, f'#provider-outcomes tr[data-provider="{row["provider"]}"]')
        assert shown == {k: plain(v) for k, v in row.items() if k != "provider"}
    page.get_by_role("link", name="Senders").click()
    for row in view(db, "SELECT * FROM sms_sender_pace"):
        shown = cells(page, f'#senders tr[data-sender="{row["phone_number"]}"]')
        for col in ("mps", "burst", "due", "due_segments", "scheduled", "leased"):
            assert shown[col] == plain(row[col]), col


@pytest.mark.parametrize("field", ["id", "to", "status", "time"])
def test_search_finds_a_message_by_each_field(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
    field: str,
) -> None:
    """Search by id, by recipient, by status and by a time range each finds the message."""
    target = seeded.failed_never_accepted
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.get_by_role("link", name="Messages").click()
    if field == "id":
        page.get_by_label("Message id").fill(target)
    elif field == "to":
        page.get_by_label("Recipient").fill(seeded.recipients[target])
    elif field == "status":
        page.get_by_label("Status").select_option("failed")
    else:
        row = db.execute("SELECT created_at FROM sms_messages WHERE id = %s", (target,)).fetchone()
        assert row is not None
        created = row[0].astimezone(UTC).replace(microsecond=0)
        page.get_by_label("Created from (UTC)").fill(created.strftime("%Y-%m-%dT%H:%M:%S"))
        until = created + timedelta(seconds=1)
        page.get_by_label("Created before (UTC)").fill(until.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/ops/messages?**")
    found = page.locator("#results tbody tr[data-id]")
    ids = [found.nth(i).get_attribute("data-id") for i in range(found.count())]
    assert target in ids
    if field in ("id", "to"):
        assert ids == [target]
    if field == "status":
        assert set(ids) == {seeded.failed_never_accepted, seeded.failed_accepted}


def test_timeline_lists_the_events_in_order(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
) -> None:
    """A sent message's page lists its events (created, attempt, transitions) in their order."""
    message_id = seeded.sent[0]
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.goto(f"{server.url}/ops/messages/{message_id}")
    rows = page.locator("#timeline tbody tr")
    shown = [
        (rows.nth(i).get_attribute("data-event-id"), rows.nth(i).get_attribute("data-type"))
        for i in range(rows.count())
    ]
    stored = db.execute(
        "SELECT e.id::text, e.event_type FROM sms_message_events e"
        " WHERE e.message_id = %s ORDER BY e.id",
        (message_id,),
    ).fetchall()
    # First the creation, made from the message row (id 0: no event row since migration 0019).
    assert shown == [("0", "created"), *(tuple(r) for r in stored)]
    types = [t for _, t in shown]
    assert types[0] == "created" and "attempt_started" in types and "attempt_result" in types
    assert types.index("attempt_started") < types.index("attempt_result")


def test_retry_requeues_a_never_accepted_message_and_the_simulator_gets_it_once(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
    sim: SimHandle,
    traffic_settings: Settings,
) -> None:
    """Retry on the failed page requeues a failed message the provider never saw; the next
    dispatcher iteration sends it, and the simulator receives it exactly once."""
    target = seeded.failed_never_accepted
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.get_by_role("link", name="Failed").click()
    page.locator(f'#failed tr[data-id="{target}"]').get_by_role("button", name="Retry").click()
    page.wait_for_url("**/ops/failed?done=retry")
    assert "Requeued" in page.locator(".notice").inner_text()
    status = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (target,))
    assert status.fetchone() == ("pending",)
    run_dispatcher(traffic_settings)
    to = seeded.recipients[target]
    received = [m for m in sim.messages() if m["to"] == to]
    assert len(received) == 1 and received[0]["accepted_count"] == 1


def test_retry_of_an_accepted_message_is_refused_with_the_api_reason(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
) -> None:
    """Retry on a failed message the provider had accepted is refused with the code and the
    message the API answers for it, and the message stays failed."""
    target = seeded.failed_accepted
    api = httpx.post(
        f"{server.url}/sms/messages/{target}/retry",
        headers={"Authorization": f"Bearer {operator_key[1]}"},
    )
    assert api.status_code == 409
    reason = api.json()["errors"][0]
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.get_by_role("link", name="Failed").click()
    with page.expect_navigation() as navigation:
        page.locator(f'#failed tr[data-id="{target}"]').get_by_role("button", name="Retry").click()
    assert navigation.value.status == 409
    refusal = page.locator("#refusal").inner_text()
    assert reason["code"] in refusal and reason["message"] in refusal
    status = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (target,))
    assert status.fetchone() == ("failed",)


def test_a_form_posted_without_the_csrf_token_is_refused(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
) -> None:
    """The retry form with its CSRF field taken out is a 403, and nothing changes."""
    target = seeded.failed_never_accepted
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.goto(f"{server.url}/ops/messages/{target}")
    form = page.locator(f'form[action="/ops/messages/{target}/retry"]')
    form.locator('input[name="csrf"]').evaluate("input => input.remove()")
    with page.expect_navigation() as navigation:
        form.get_by_role("button", name="Retry").click()
    assert navigation.value.status == 403
    assert "csrf" in page.locator(".problem").inner_text()
    status = db.execute("SELECT delivery_status FROM sms_messages WHERE id = %s", (target,))
    assert status.fetchone() == ("failed",)


def test_reveal_shows_the_recipient_and_is_recorded(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
    db: psycopg.Connection[Any],
) -> None:
    """The recipient is masked until Reveal is pressed; the reveal is an event naming the key,
    and it shows in the timeline."""
    target = seeded.sent[1]
    to = seeded.recipients[target]
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.goto(f"{server.url}/ops/messages/{target}")
    assert to not in page.content()
    page.get_by_role("button", name="Reveal recipient").click()
    page.wait_for_load_state()
    assert to in page.locator("#recipient").inner_text()
    rows = db.execute(
        "SELECT (detail->>'api_key_id')::bigint FROM sms_message_events"
        " WHERE message_id = %s AND event_type = 'recipient_revealed'",
        (target,),
    ).fetchall()
    assert rows == [(operator_key[0],)]
    assert page.locator('#timeline tr[data-type="recipient_revealed"]').count() == 1


def test_every_page_loads_without_console_errors_or_failed_requests(
    browser_page: Watched,
    server: LiveServer,
    seeded: Seeded,
    operator_key: tuple[int, str],
) -> None:
    """Each page, wide and at 390 px, loads with no console error and no failed request, and
    at 390 px nothing but its own scrolling tables is wider than the screen."""
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    paths = [*PAGES, f"/ops/messages/{seeded.sent[0]}", f"/ops/messages/{seeded.failed_accepted}"]
    # networkidle: every request a page makes (its stylesheet, its icon) ends before the next
    # navigation, which would otherwise abort one still under way.
    for path in paths:
        response = page.goto(server.url + path, wait_until="networkidle")
        assert response is not None and response.status == 200, path
    page.set_viewport_size(NARROW)
    for path in paths:
        page.goto(server.url + path, wait_until="networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= NARROW["width"], (path, width)
    assert browser_page.problems() == []


def test_keyboard_reaches_the_navigation_with_a_visible_focus(
    browser_page: Watched, server: LiveServer, operator_key: tuple[int, str]
) -> None:
    """From the top of a page, Tab reaches the skip link and then the page links, each with a
    visible focus outline; Enter on a link follows it."""
    sign_in(browser_page, server.url, operator_key[1])
    page = browser_page.page
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    seen = []
    for _ in range(4):
        page.keyboard.press("Tab")
        seen.append(page.evaluate("document.activeElement.textContent"))
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"
    assert "Overview" in seen and "Messages" in seen
    while page.evaluate("document.activeElement.textContent") != "Messages":
        page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/ops/messages")
    assert page.get_by_role("heading", level=1).inner_text() == "Messages"
