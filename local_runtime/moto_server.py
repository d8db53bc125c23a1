"""moto's server, with DynamoDB's writes made atomic as DynamoDB's are.

moto serves each request in a thread of its own and checks a write's condition, then writes, with
nothing in between held: two conditional writes at once can both pass (two retries of one job both
"win"), and a cancelled transaction restores its tables over writes made meanwhile. DynamoDB makes
each conditional write, and each transaction, atomic; so does this server, by running the writes to
each item one at a time (writes to other items and reads still run alongside). A transaction checks
all its conditions before its first write instead of copying its tables whole to roll back (moto's
way, whose cost grows with the tables and would make the emulator what a benchmark measures). A
Query of a table reads its one partition, as DynamoDB does, where moto sorts every item of the table
first (each Query's cost grew with the table: in a long load run, half the emulator's CPU). The same
in three more places where moto's cost grew with the traffic, not the work: SQS reads one queue
setting, not all its attributes (which count the whole queue's messages three times), to check each
message it hands out against the retention period; its clock is `time.time()`, not a datetime built
for each message at each look; and DynamoDB's item replies (already its JSON) are written with
`json.dumps`, not walked through the API model. Its connections stay open between requests
(`KeepAliveRequestHandler`). Everything else is moto's own:
`python moto_server.py -p PORT` takes moto.server's arguments."""
from __future__ import annotations

import functools
import io
import json
import threading
import time
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import MultipleTransactionsException, TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto import server as moto_server
from moto.moto_server.werkzeug_app import MotoRequestHandler
from moto.sqs import models as sqs_models
from moto.sqs.models import Message, SQSBackend

# Writes to one item run one at a time, as DynamoDB's do; writes to other items run alongside (a
# single lock for all writes made each wait on all the others: at load, the emulator's latency). An
# item's lock is one of a fixed set, by its key's hash; re-entrant, as a transaction's items are
# writes too.
ITEM_LOCKS = tuple(threading.RLock() for _ in range(256))


def _item_lock_indexes(backend: DynamoDBBackend, table_name: str, *keys: dict[str, Any]) -> list[int]:
    """The locks of the items with these keys (or whole items), each once, in the order every writer
    takes them (so two transactions never wait on each other's)."""
    table = backend.get_table(table_name)
    names = [name for name in (table.hash_key_attr, table.range_key_attr) if name]
    return sorted({hash((table_name, *(json.dumps(key.get(name), sort_keys=True) for name in names)))
                   % len(ITEM_LOCKS) for key in keys})


class _Holding:
    """Holds the given item locks for a `with` block."""

    def __init__(self, indexes: list[int]):
        self._locks = [ITEM_LOCKS[i] for i in indexes]

    def __enter__(self) -> None:
        for lock in self._locks:
            lock.acquire()

    def __exit__(self, *exc_info) -> None:
        for lock in reversed(self._locks):
            lock.release()


def _atomic(write):
    """A single-item write (its table's name and its key or whole item first) under its item's lock."""
    @functools.wraps(write)
    def atomic_write(self: DynamoDBBackend, table_name: str, key: dict[str, Any], *args, **kwargs):
        try:
            indexes = _item_lock_indexes(self, table_name, key)
        except Exception:  # noqa: BLE001 - no such table: moto's own error, from the write itself
            indexes = []
        with _Holding(indexes):
            return write(self, table_name, key, *args, **kwargs)
    return atomic_write


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Every condition checked, then every write made, under the locks of all its items (no write
    to one of them in between)."""
    indexes: set[int] = set()
    for entry in transact_items:
        kind, op = next(iter(entry.items()))
        indexes.update(_item_lock_indexes(self, op["TableName"], op["Key"] if kind != "Put" else op["Item"]))
    with _Holding(sorted(indexes)):
        _transact_write_items(self, transact_items)


def _transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    keys: set[tuple[str, str]] = set()
    reasons: list[tuple[str | None, str | None, Any]] = []
    for entry in transact_items:
        kind, op = next(iter(entry.items()))
        table = self.get_table(op["TableName"])
        key = op["Key"] if kind != "Put" else {
            name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name}
        identity = (op["TableName"], str(sorted(key.items())))
        if identity in keys:
            raise MultipleTransactionsException()
        keys.add(identity)
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        if condition and not get_filter_expression(condition, op.get("ExpressionAttributeNames"),
                                                   op.get("ExpressionAttributeValues")).expr(current):
            old = current.to_json()["Attributes"] if current and \
                op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
            reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
        else:
            reasons.append((None, None, None))
    if any(code for code, _, _ in reasons):
        raise TransactionCanceledException(reasons)
    for entry in transact_items:
        kind, op = next(iter(entry.items()))
        names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        if kind == "Put":
            self.put_item(op["TableName"], op["Item"])
        elif kind == "Update":
            self.update_item(op["TableName"], op["Key"], op["UpdateExpression"], names or {}, values or {})
        elif kind == "Delete":
            self.delete_item(op["TableName"], op["Key"])


# The partition a Query of this thread reads (moto's Table.query picks it from `all_items()`).
_queried = threading.local()
_every_item = Table.all_items


def _partition_items(self: Table) -> list:
    """`all_items()` while a Query of a table runs: its partition's items (the Query sorts them)."""
    hash_key = getattr(_queried, "hash_key", None)
    if hash_key is None:
        return _every_item(self)
    partition = self.items.get(hash_key)
    if partition is None:
        return []
    return list(partition.values()) if self.range_key_attr else [partition]


def _one_partition(query):
    @functools.wraps(query)
    def one_partition_query(self: Table, hash_key, *args, **kwargs):
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None:  # an index's partitions are not the table's
            return query(self, hash_key, *args, **kwargs)
        _queried.hash_key = hash_key
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _queried.hash_key = None
    return one_partition_query


def _retained(self: SQSBackend, queue_name: str, message: Message) -> bool:
    """Whether a message is within its queue's retention period (moto's check, with one setting read)."""
    retention_s = int(self.get_queue(queue_name).message_retention_period)  # type: ignore[attr-defined]
    return retention_s + message.sent_timestamp / 1000 > time.time()  # type: ignore[operator]


def _unix_time(dt=None) -> float:
    return time.time() if dt is None else _moto_unix_time(dt)


def _unix_time_millis(dt=None) -> float:
    return _unix_time(dt) * 1000.0


# DynamoDB operations whose reply is items and counts, in DynamoDB's own JSON already.
ITEM_OPERATIONS = frozenset({"GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan",
                             "BatchGetItem", "BatchWriteItem", "TransactGetItems", "TransactWriteItems"})
_model_serialized = DynamoHandler.serialized


def _item_reply(self: DynamoHandler, action_result):
    result = action_result.result
    if isinstance(result, dict) and self._get_action() in ITEM_OPERATIONS:
        return 200, {**self.response_headers, "Content-Type": "application/x-amz-json-1.0"}, json.dumps(result)
    return _model_serialized(self, action_result)  # errors and everything else, as moto writes them


class KeepAliveRequestHandler(MotoRequestHandler):
    """moto's request handler on a connection kept open, as AWS's endpoints keep theirs.

    Werkzeug's development server closes every connection after its response, because it cannot
    tell whether the application read the whole request body: at load every AWS call opened a TCP
    connection and a server thread of its own, the listen queue overflowed, and connecting took a
    SYN retry (a second: the SDKs' timeouts). Here a request's body (its Content-Length) is read
    before the application runs, so the next request starts where it should; a chunked one, one
    without a length or one waiting for "100 Continue" still closes its connection. No access log
    line either (nobody reads it)."""

    _keep_alive = False

    def run_wsgi(self) -> None:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        # A client that waits for "100 Continue" before its body gets it from werkzeug, as before.
        waits_to_send = self.headers.get("Expect", "").strip().lower() == "100-continue"
        length = self.headers.get("Content-Length")
        self._keep_alive = not (chunked or waits_to_send) and (length is not None or self.command in ("GET", "HEAD"))
        if not self._keep_alive:
            return super().run_wsgi()
        connection = self.rfile
        self.rfile = io.BytesIO(connection.read(int(length or 0)))
        try:
            super().run_wsgi()
        finally:
            self.rfile = connection

    def send_header(self, keyword: str, value: str) -> None:
        if self._keep_alive and keyword.lower() == "connection" and value.lower() == "close":
            return  # Werkzeug's "always close": the body was read whole, the connection stays
        super().send_header(keyword, value)

    def log_request(self, *args, **kwargs) -> None:
        pass


_moto_unix_time = sqs_models.unix_time
sqs_models.unix_time, sqs_models.unix_time_millis = _unix_time, _unix_time_millis
SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign]
DynamoHandler.serialized = _item_reply  # type: ignore[method-assign,assignment]
Table.all_items = _partition_items  # type: ignore[method-assign]
Table.query = _one_partition(Table.query)  # type: ignore[method-assign]
setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
for name in ("put_item", "update_item", "delete_item"):  # batch_write_item's items come here too
    setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))

moto_server.MotoRequestHandler = KeepAliveRequestHandler  # type: ignore[misc]

if __name__ == "__main__":
    moto_server.main()
