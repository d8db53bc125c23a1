"""moto's server, with DynamoDB's writes made atomic as DynamoDB's are.

moto serves each request in a thread of its own and checks a write's condition, then writes, with
nothing in between held: two conditional writes at once can both pass (two retries of one job both
"win"), and a cancelled transaction restores its tables over writes made meanwhile. DynamoDB makes
each conditional write, and each transaction, atomic; so does this server, by running the writes one
at a time (reads still run alongside). A transaction checks all its conditions before its first write
instead of copying its tables whole to roll back (moto's way, whose cost grows with the tables and
would make the emulator what a benchmark measures). Everything else is moto's own:
`python moto_server.py -p PORT` takes moto.server's arguments."""
from __future__ import annotations

import functools
import threading
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import MultipleTransactionsException, TransactionCanceledException
from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_one_write_at_a_time = threading.RLock()  # re-entrant: a transaction's items are writes too


def _atomic(write):
    @functools.wraps(write)
    def atomic_write(*args, **kwargs):
        with _one_write_at_a_time:
            return write(*args, **kwargs)
    return atomic_write


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    """Every condition checked, then every write made (under the write lock: nothing in between)."""
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


setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
for name in WRITES:
    setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))

if __name__ == "__main__":
    main()
