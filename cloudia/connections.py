"""Which WebSocket connections a user has now, in Redis with a TTL.

API Gateway drops a connection after 2 h, so a registration expires with it; `ping` renews it. The
worker pushes an answer to every *current* connection of the user, not only the one that asked.

Keys: `conn:{connectionId}` -> user id and the set `user:{userId}:conns`, both with the connection
TTL; `gone:{connectionId}` a tombstone that `unregister` leaves for `tombstone_s`.

A frame can still be in flight when its connection's `$disconnect` runs; its handler must not
register the connection again (a zombie registration lives for the whole TTL, and the worker pushes
every answer to it). So every registration is one Lua script that refuses a tombstoned connection,
and `unregister` writes the tombstone in the same transaction that deletes the registration: a handler's
write lands either before the delete (and is deleted) or after the tombstone (and is refused). The
tombstone outlives any handler (see `Resilience.connection_tombstone_s`); API Gateway never gives an
id to a second connection, so it refuses nothing else.

The scripts read the keys of a user's other connections (to count them), so the registry needs Redis
without cluster mode (the deployment's replication group), as its transactions across keys already do.
"""
from __future__ import annotations

from typing import cast

import redis

from cloudia import lua
from cloudia.schema import connection_key, connection_tombstone_key, user_connections_key
from cloudia.settings import Resilience

REGISTERED, CLOSED, AT_CAPACITY = "registered", "closed", "at_capacity"

_REGISTER = lua.source("connections_register")
_OUTCOMES = {0: REGISTERED, -1: CLOSED, -2: AT_CAPACITY}


class ConnectionRegistry:
    def __init__(self, client: redis.Redis, ttl_s: int,
                 tombstone_s: int = Resilience().connection_tombstone_s):
        self._redis = client
        self._ttl_s = ttl_s
        self._tombstone_s = tombstone_s
        self._register = client.register_script(_REGISTER)

    def register(self, connection_id: str, user_id: str, max_per_user: int = 0) -> str:
        """Register (or renew) the connection as the user's, in one atomic step: `REGISTERED`;
        `CLOSED` if its `$disconnect` already ran; `AT_CAPACITY` if `max_per_user` (0: no cap) of
        the user's other connections are registered already. Nothing is written when refused."""
        verdict, _live = self._register(
            keys=[connection_key(connection_id), user_connections_key(user_id),
                  connection_tombstone_key(connection_id)],
            args=[user_id, self._ttl_s, max_per_user, connection_key(""), connection_id],
        )
        return _OUTCOMES[int(verdict)]

    def refresh(self, connection_id: str) -> str | None:
        """Renew a live registration; the user id, or None if it is unknown or expired.
        (EXPIRE never creates a key: a `$disconnect` between the read and the renewal leaves nothing.)"""
        user_id = self.user_of(connection_id)
        if user_id is None:
            return None
        pipe = self._redis.pipeline(transaction=True)
        pipe.expire(connection_key(connection_id), self._ttl_s)
        pipe.expire(user_connections_key(user_id), self._ttl_s)
        pipe.execute()
        return user_id

    def unregister(self, connection_id: str) -> None:
        """Forget a connection that closed, and refuse its registration from now on (frames of it
        still in flight). Idempotent: removing an unknown connection is not an error."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(connection_tombstone_key(connection_id), 1, ex=self._tombstone_s)
        pipe.getdel(connection_key(connection_id))
        _, user_id = pipe.execute()
        if user_id is not None:
            self._redis.srem(user_connections_key(user_id), connection_id)

    def user_of(self, connection_id: str) -> str | None:
        # The client decodes responses (cloudia/redis_client.py): every value read back is a str.
        return cast("str | None", self._redis.get(connection_key(connection_id)))

    def connections_of(self, user_id: str) -> list[str]:
        """The user's current connections; expired members are pruned on the way."""
        members = sorted(cast("set[str]", self._redis.smembers(user_connections_key(user_id))))
        if not members:
            return []
        alive = self._redis.mget([connection_key(c) for c in members])
        stale = [c for c, owner in zip(members, alive) if owner != user_id]
        if stale:
            self._redis.srem(user_connections_key(user_id), *stale)
        return [c for c, owner in zip(members, alive) if owner == user_id]
