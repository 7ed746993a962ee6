"""The fault harness's verdict (chaos/counts.py) as a pure function of acks, the simulator's log
and the database's rows: no processes, no database."""

from __future__ import annotations

import pytest

from chaos.client import Plan, recipients
from chaos.counts import Ack, DbMessage, SimMessage, count, examples, provider_status
from chaos.observe import sim_message, stale_statuses


def db(
    i: int, status: str = "delivered", sid: str | None = "", provider: str = "twilio"
) -> DbMessage:
    return DbMessage(f"id{i}", f"body {i}", status, provider, f"SM{i}" if sid == "" else sid)


def sim(i: int, status: str = "delivered", sid: str = "", provider: str = "twilio") -> SimMessage:
    return SimMessage(sid or f"SM{i}", provider, f"body {i}", status, f"id{i}")


def ack(i: int) -> Ack:
    return Ack(f"body {i}", "ok", f"id{i}")


def test_clean_run_counts_nothing_wrong() -> None:
    """Every acked message sent once and delivered: nothing lost, doubled, stuck or unexpected."""
    c = count([ack(1), ack(2)], [sim(1), sim(2)], [db(1), db(2)])
    assert (c.acked, c.lost, c.duplicated, c.unexpected, c.stuck) == (2, 0, 0, 0, 0)
    assert c.status_fidelity_pct == 100.0
    assert c.ok


def test_acked_message_missing_at_the_provider_is_lost() -> None:
    """An acked body the provider never accepted, its message not failed, is lost."""
    c = count([ack(1), ack(2)], [sim(1)], [db(1), db(2, "queued", sid=None)])
    assert c.lost == 1
    assert not c.ok


def test_acked_message_missing_from_the_database_is_lost() -> None:
    """A 202 whose message is nowhere (neither written nor sent) is lost."""
    c = count([ack(1)], [], [])
    assert c.lost == 1


@pytest.mark.parametrize("status", ["failed", "canceled", "expired"])
def test_unsent_message_in_a_legitimate_final_state_is_not_lost(status: str) -> None:
    """Failed (e.g. after its last attempt), canceled or expired without a send is not a loss."""
    c = count([ack(1)], [], [db(1, status, sid=None)])
    assert (c.lost, c.stuck) == (0, 0)
    assert c.failed == (1 if status == "failed" else 0)


def test_pending_message_is_stuck_and_lost() -> None:
    """Still pending after quiescence: stuck, and (never at the provider) lost as well."""
    c = count([ack(1)], [], [db(1, "pending", sid=None)])
    assert (c.stuck, c.lost) == (1, 1)


def test_outbox_row_left_makes_a_message_stuck() -> None:
    """A send_sms outbox row left behind counts as stuck whatever the message's status."""
    c = count([ack(1)], [sim(1)], [db(1)], outbox_message_ids=["id1"])
    assert (c.stuck, c.lost) == (1, 0)
    assert not c.ok


def test_body_accepted_twice_is_duplicated() -> None:
    """Two provider messages with one body: one duplicated body, one extra copy."""
    c = count(
        [ack(1), ack(2)],
        [sim(1), sim(1, sid="SMcopy"), sim(1, sid="SMcopy2"), sim(2)],
        [db(1), db(2)],
        detected_doubles=1,
    )
    assert (c.duplicated, c.duplicate_copies, c.provider_messages) == (1, 2, 4)
    assert c.detected_doubles == 1
    assert not c.ok


def test_provider_message_never_written_is_unexpected() -> None:
    """A body at the provider that no sms_messages row holds is unexpected."""
    stray = SimMessage("SMx", "twilio", "not ours", "delivered")
    c = count([ack(1)], [sim(1), stray], [db(1)])
    assert c.unexpected == 1
    assert not c.ok


def test_indeterminate_requests_split_by_whether_the_message_was_written() -> None:
    """No-answer requests are neither acked nor lost: counted apart, in the database or not."""
    acks = [ack(1), Ack("body 2", "info"), Ack("body 3", "info"), Ack("body 4", "fail")]
    c = count(acks, [sim(1), sim(2)], [db(1), db(2)])
    assert (c.requests, c.acked, c.rejected) == (4, 1, 1)
    assert (c.indeterminate, c.indeterminate_in_db, c.indeterminate_absent) == (2, 1, 1)
    assert (c.lost, c.unexpected) == (0, 0)
    assert c.ok


def test_database_doubles_count_idempotency_failures() -> None:
    """One body written twice (a retry that was not recognised as a replay) is a database double."""
    twice = DbMessage("id1b", "body 1", "delivered", "twilio", "SM1b")
    c = count([ack(1)], [sim(1), sim(1, sid="SM1b")], [db(1), twice])
    assert (c.db_doubles, c.duplicated, c.db_messages) == (1, 1, 2)


def test_status_fidelity_compares_the_recorded_sid_with_the_provider() -> None:
    """Fidelity: DB status equal to the provider's final status (mapped) for the recorded sid."""
    rows = [
        db(1),  # delivered = delivered
        db(2, "sent"),  # lags: the final callback was lost
        db(3, "sending", provider="signalwire"),  # initiated -> sending
        db(4, sid="SMnowhere"),  # a sid the provider does not know
        db(5, "failed", sid=None),  # the provider has it, we never learnt the sid
        db(6, "failed", sid=None),  # never reached the provider: not compared
    ]
    remote = [
        sim(1),
        sim(2),
        sim(3, "initiated", provider="signalwire"),
        sim(4, sid="SM4"),
        sim(5),
    ]
    c = count([ack(i) for i in range(1, 7)], remote, rows)
    assert (c.status_checked, c.status_matched, c.sid_unknown) == (5, 2, 1)
    assert c.status_fidelity_pct == 40.0
    assert c.failed_but_sent == 1
    assert c.db_statuses == {"delivered": 2, "failed": 2, "sending": 1, "sent": 1}


def test_fidelity_of_nothing_to_compare_is_full() -> None:
    """With no message at any provider, fidelity is 100 % (nothing disagrees)."""
    assert count([], [], []).status_fidelity_pct == 100.0


@pytest.mark.parametrize(
    ("word", "status"),
    [("accepted", "queued"), ("queued", "queued"), ("initiated", "sending"), ("SENT", "sent")],
)
def test_provider_status_words_map_to_delivery_status(word: str, status: str) -> None:
    """Provider status words map onto our lifecycle (SignalWire's initiated is sending)."""
    assert provider_status(word) == status


def test_sim_row_message_id_falls_back_to_callback_url_and_custom_variables() -> None:
    """Our message id comes from the row, else the Twilio callback query or SignalWire variables."""
    base = {"sid": "SM1", "provider": "twilio", "body": "b", "status": "sent"}
    assert sim_message({**base, "message_id": "m1"}).message_id == "m1"
    url = "http://127.0.0.1:1/webhook/twilio/status?message_id=m2"
    assert sim_message({**base, "status_callback": url}).message_id == "m2"
    assert sim_message({**base, "custom_variables": {"message_id": "m3"}}).message_id == "m3"
    assert sim_message(base).message_id is None


def test_stale_statuses_are_open_messages_behind_the_provider() -> None:
    """What the sweep would fix: accepted, still open here, further along at the provider."""
    rows = [db(1, "sent"), db(2, "delivered"), db(3, "queued")]
    assert stale_statuses(rows, [sim(1), sim(2), sim(3, "queued")]) == 1


def test_plan_bodies_and_keys_are_unique_and_use_both_senders() -> None:
    """The client's plan: unique bodies and idempotency keys, both providers' senders."""
    plan = Plan("kill", 50, 10.0, recipients(2), seed=3)
    requests = plan.requests()
    assert len({r[0] for r in requests}) == len({r[1] for r in requests}) == 50
    assert {r[2] for r in requests} <= set(recipients(2))
    assert {r[3] for r in requests} == {"+15005550006", "+15005550010"}
    assert plan.requests() == requests  # the seed repeats the plan


def test_examples_name_the_ids_behind_each_failure_and_no_bodies() -> None:
    """Failing counts come with a few ids to look up in the logs; bodies never appear."""
    rows = [db(1), db(2, "pending", sid=None), db(3)]
    remote = [sim(1), sim(1, sid="SMcopy"), SimMessage("SMx", "twilio", "stray", "sent")]
    found = examples([ack(1), ack(2), ack(3)], remote, rows)
    assert found == {
        "lost": ["id2", "id3"],
        "duplicated": ["id1 twilio:SM1,SMcopy"],
        "unexpected": ["SMx"],
        "stuck": ["id2"],
    }
    assert "body" not in repr(found)
    assert examples([ack(1)], [sim(1)], [db(1)]) == {}


def test_sid_of_another_message_is_a_wrong_sid_and_fails_the_run() -> None:
    """A message holding the sid of another message's provider copy (a wrong adoption): that
    message is lost, the other's body doubled, and the sid is counted as wrong, not as a match."""
    rows = [db(1, sid="SM2a"), db(2, sid="SM2b")]  # 1 adopted 2's first copy; 2 was sent again
    remote = [sim(2, sid="SM2a"), sim(2, sid="SM2b")]
    c = count([ack(1), ack(2)], remote, rows)
    assert (c.lost, c.duplicated, c.wrong_sid) == (1, 1, 1)
    assert (c.status_checked, c.status_matched) == (2, 1)
    assert examples([ack(1), ack(2)], remote, rows)["wrong_sid"] == ["id1 twilio:SM2a"]
    assert not c.ok
