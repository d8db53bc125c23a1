"""moto's server, with DynamoDB's writes made atomic as DynamoDB's are.

moto serves each request in a thread of its own and checks a write's condition, then writes, with
nothing in between held: two conditional writes at once can both pass (two retries of one job both
"win"), and a cancelled transaction restores its tables over writes made meanwhile. DynamoDB makes
each conditional write, and each transaction, atomic; so does this server, by running the writes one
at a time (reads still run alongside). Everything else is moto's own: `python moto_server.py -p PORT`
takes moto.server's arguments."""
from __future__ import annotations

import functools
import threading

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


for name in WRITES:
    setattr(DynamoDBBackend, name, _atomic(getattr(DynamoDBBackend, name)))

if __name__ == "__main__":
    main()
