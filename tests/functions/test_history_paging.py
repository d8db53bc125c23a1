"""`history`/`resume` replies come in pages, by count and by size, each within API Gateway's 128 KB per
message: a page holds what fits and a `next` cursor, and following `next` brings every entry once."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from cloudia import history as history_module
from cloudia.history import ASSISTANT, ERROR, USER, Entry
from tests.functions.conftest import body_of

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

# API Gateway's "message payload size": a reply over it is not delivered.
API_GATEWAY_MAX_MESSAGE_BYTES = 128 * 1024
# The longest a message can be (`max_message_chars`), in 4-byte characters: 32,000 bytes of UTF-8.
LONGEST_MESSAGE = "🙂" * 8000


def sent_bytes(response: dict) -> int:
    return len(response["body"].encode("utf-8"))


def read_all(functions, connection: str, first: dict, route_key: str = "history") -> tuple[list[dict], list[dict]]:
    """Follow `next` from the reply to `first`, as a client does: (every reply, every entry)."""
    replies, frame = [], first
    while True:
        response = functions.send(connection, frame, route_key=route_key)
        assert response["statusCode"] == 200, body_of(response)
        assert sent_bytes(response) <= history_module.HISTORY_PAGE_MAX_BYTES < API_GATEWAY_MAX_MESSAGE_BYTES
        replies.append(body_of(response))
        if "next" not in replies[-1]:
            return replies, [m for reply in replies for m in reply["messages"]]
        assert len(replies) < 100, "the pages do not end"
        frame = {"action": first["action"], "conversationId": first["conversationId"], "cursor": replies[-1]["next"]}


@pytest.mark.parametrize("action", ["history", "resume"])
def test_a_long_conversation_comes_in_pages_within_the_frame_limit_and_every_entry_arrives_once(functions, action):
    # GIVEN a conversation of 12 entries of the largest size a message can have (32,000 bytes each:
    # 384 KB in all, three times what API Gateway delivers in one message)
    for i in range(12):
        functions.service.history.append("alice", "conv-1", f"job-{i // 2}", USER if i % 2 == 0 else ASSISTANT,
                                         LONGEST_MESSAGE, created_at_ms=1000 + i)
    connection = functions.open_connection("alice")
    # WHEN her client asks for it, then follows `next`
    replies, entries = read_all(functions, connection, {"action": action, "conversationId": "conv-1"}, action)
    # THEN every reply was within the budget (checked in read_all), there were several, each but the
    # last with `next`, and all 12 entries came, oldest first, each once and whole
    assert len(replies) >= 4
    assert all("next" in reply for reply in replies[:-1])
    assert [e["at"] for e in entries] == [1000 + i for i in range(12)]
    assert all(e["message"] == LONGEST_MESSAGE and "truncated" not in e for e in entries)


def test_pages_are_bounded_by_count_too(functions):
    # GIVEN 150 short entries
    for i in range(150):
        functions.service.history.append("alice", "conv-1", f"job-{i:03d}", USER, f"q{i}", created_at_ms=1000 + i)
    connection = functions.open_connection("alice")
    # WHEN they are read since 0
    replies, entries = read_all(functions, connection, {"action": "history", "conversationId": "conv-1", "since": 0})
    # THEN the first page holds 100 and says there is more, and the next ones bring the rest
    assert len(replies[0]["messages"]) == history_module.HISTORY_PAGE_SIZE and "next" in replies[0]
    assert [e["message"] for e in entries] == [f"q{i}" for i in range(150)]


def test_since_still_selects_where_the_pages_start(functions):
    for i in range(6):
        functions.service.history.append("alice", "conv-1", f"job-{i}", USER, LONGEST_MESSAGE, created_at_ms=1000 + i)
    connection = functions.open_connection("alice")
    _, entries = read_all(functions, connection, {"action": "history", "conversationId": "conv-1", "since": 1002})
    assert [e["at"] for e in entries] == [1003, 1004, 1005]


def test_an_entry_too_large_for_a_page_even_alone_is_cut_to_fit_and_says_so(functions):
    # GIVEN an answer far larger than any the settings allow (a setting raised far, say), between two others
    history = functions.service.history
    history.append("alice", "conv-1", "job-1", USER, "q1", created_at_ms=1000)
    history.append("alice", "conv-1", "job-1", ASSISTANT, "é\"\\\n" * 60_000, created_at_ms=1001)
    history.append("alice", "conv-1", "job-2", USER, "q2", created_at_ms=1002)
    connection = functions.open_connection("alice")
    # WHEN the conversation is read
    _, entries = read_all(functions, connection, {"action": "history", "conversationId": "conv-1"})
    # THEN each page was still within the budget, every entry came, and the large one is its start, flagged
    assert [e["at"] for e in entries] == [1000, 1001, 1002]
    big = entries[1]
    assert big["truncated"] is True
    assert ("é\"\\\n" * 60_000).startswith(big["message"]) and len(big["message"]) > 40_000
    assert "truncated" not in entries[0] and "truncated" not in entries[2]


def test_a_cursor_reads_only_the_askers_own_conversation(functions):
    # GIVEN alice's long conversation, and bob's, and a cursor of alice's pages
    for i in range(6):
        functions.service.history.append("alice", "conv-1", f"job-a{i}", USER, LONGEST_MESSAGE, created_at_ms=1000 + i)
    functions.service.history.append("bob", "conv-1", "job-b", USER, "bob's", created_at_ms=5000)
    alice, bob = functions.open_connection("alice"), functions.open_connection("bob")
    cursor = body_of(functions.send(alice, {"action": "history", "conversationId": "conv-1"},
                                    route_key="history"))["next"]
    # WHEN bob sends that cursor THEN he reads his own conversation after that point, nothing of alice's
    reply = body_of(functions.send(bob, {"action": "history", "conversationId": "conv-1", "cursor": cursor},
                                   route_key="history"))
    assert [m["message"] for m in reply["messages"]] == ["bob's"]


@pytest.mark.parametrize("cursor", ["", "x", "1000#job-1#user", "0000000001000#job 1#user", "0000000001000#j#USER"])
def test_a_cursor_that_is_not_a_pages_next_is_refused_with_why(functions, cursor):
    connection = functions.open_connection("alice")
    response = functions.send(connection, {"action": "history", "conversationId": "conv-1", "cursor": cursor},
                              route_key="history")
    assert response["statusCode"] == 400
    assert body_of(response)["reason"] == "invalid_field"
    assert "cursor" in body_of(response)["message"]


# -- the page's arithmetic, on any entries --------------------------------------------------------

texts = st.one_of(
    st.text(max_size=40),
    # long, with what JSON escapes (quotes, backslashes, newlines, tabs) and multi-byte characters
    st.tuples(st.sampled_from(["a", "é", "€", "🙂", "\"", "\\", "\n", "\t", "\u2028"]),
              st.integers(0, 40_000)).map(lambda cn: cn[0] * cn[1]),
)
entries_strategy = st.lists(st.tuples(st.sampled_from([USER, ASSISTANT, ERROR]), texts), max_size=40)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries=entries_strategy, max_bytes=st.sampled_from([96 * 1024, 40_000, 4_000]))
def test_pages_of_any_entries_fit_the_budget_and_together_hold_them_all_in_order(entries, max_bytes):
    fit_page, page_size = history_module.fit_page, history_module.HISTORY_PAGE_SIZE
    stored = [Entry(f"job-{i}", role, text, 1000 + i) for i, (role, text) in enumerate(entries)]
    got, after, pages = [], None, 0
    while True:
        # what the store answers: up to a page's count after the cursor, and whether more follow
        rest = [e for e in stored if after is None or e.position > after]
        window = rest[:page_size]
        page = fit_page("conv-1", window, more=len(rest) > len(window), max_bytes=max_bytes)
        pages += 1
        assert len(json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")) <= max_bytes
        assert page["messages"] or not window  # always progress
        got.extend(page["messages"])
        if "next" not in page:
            break
        after = page["next"]
        assert pages <= len(stored) + 1
    assert [(m["jobId"], m["role"]) for m in got] == [(e.job_id, e.role) for e in stored]
    for message, entry in zip(got, stored):
        if message.get("truncated"):
            assert entry.message.startswith(message["message"]) and message["message"] != entry.message
        else:
            assert message["message"] == entry.message
