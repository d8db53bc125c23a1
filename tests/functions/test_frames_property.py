"""Property: whatever malformed frame reaches sendMessage, the sender gets an `error` event and the
handler never raises (and nothing is queued)."""
from __future__ import annotations

import dataclasses
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from tests.functions.conftest import body_of

pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

MAX_MESSAGE_CHARS = 64
VALID = {"action": "sendMessage", "conversationId": "conv-1", "clientMessageId": "m-1", "message": "hello"}
FIELDS = tuple(VALID)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def _not_a_json_object(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), dict)
    except ValueError:
        return True


# Text that is not a JSON object: garbage, truncated JSON, or JSON of another type.
not_an_object = (st.text(max_size=200).filter(_not_a_json_object)
                 | json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps)
                 | st.just(json.dumps(VALID)).flatmap(lambda s: st.integers(0, len(s) - 1).map(lambda n: s[:n])))
# An object without one required field.
missing_field = st.sampled_from(FIELDS).map(lambda f: {k: v for k, v in VALID.items() if k != f})
# A required field of the wrong JSON type.
wrong_type = st.tuples(st.sampled_from(FIELDS), json_values.filter(lambda v: not isinstance(v, str))).map(
    lambda fv: {**VALID, fv[0]: fv[1]})
# An unknown action.
unknown_action = st.text(max_size=30).filter(lambda a: a != "sendMessage").map(lambda a: {**VALID, "action": a})
# An id outside its charset or length.
id_charset = set(string.ascii_letters + string.digits + "_.:-")
bad_id = (st.text(min_size=1, max_size=40).filter(lambda s: not set(s) <= id_charset)
          | st.just("").map(str) | st.integers(129, 300).map(lambda n: "x" * n))
bad_ids = st.tuples(st.sampled_from(["conversationId", "clientMessageId"]), bad_id).map(
    lambda fv: {**VALID, fv[0]: fv[1]})
# A message that is blank, too long, or not text.
bad_message = (st.text(alphabet=" \t\r\n", max_size=10)
               | st.integers(MAX_MESSAGE_CHARS + 1, MAX_MESSAGE_CHARS * 3).map(lambda n: "y" * n)
               | st.tuples(st.text(max_size=10), st.characters(codec="utf-8", categories=["Cc"]).filter(
                   lambda c: c not in "\t\r\n"), st.text(max_size=10)).map("".join)
               ).map(lambda m: {**VALID, "message": m})
malformed_objects = (missing_field | wrong_type | unknown_action | bad_ids | bad_message).map(json.dumps)
malformed_frames = not_an_object | malformed_objects


@pytest.fixture
def narrow_functions(functions_with, settings):
    return functions_with(resilience=dataclasses.replace(settings.resilience, max_message_chars=MAX_MESSAGE_CHARS))


def test_every_malformed_frame_gets_an_error_event_and_none_raises(narrow_functions):
    functions = narrow_functions
    connection = functions.open_connection("alice")
    seen_reasons = set()

    @hypothesis_settings(max_examples=1500, deadline=None, database=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(body=malformed_frames)
    def check(body):
        response = functions.send(connection, body)
        assert response["statusCode"] == 400, (body, response)
        event = body_of(response)
        assert event["event"] == "error" and event["reason"] and event["message"]
        seen_reasons.add(event["reason"])

    check()
    assert functions.queued_jobs() == []
    # The strategies reach every kind of refusal, not one kind many times.
    assert {"malformed_json", "not_an_object", "missing_field", "invalid_field", "unknown_action",
            "message_too_long", "not_text", "empty_message"} <= seen_reasons
