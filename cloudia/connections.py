"""Which WebSocket connections a user has now, in Redis with a TTL.

API Gateway drops a connection after 2 h, so a registration expires with it; `ping` renews it. The
worker pushes an answer to every *current* connection of the user, not only the one that asked.
"""
from __future__ import annotations

import redis

from cloudia.schema import connection_key, user_connections_key


class ConnectionRegistry:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self._redis = client
        self._ttl_s = ttl_s

    def register(self, connection_id: str, user_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(connection_key(connection_id), user_id, ex=self._ttl_s)
        pipe.sadd(user_connections_key(user_id), connection_id)
        pipe.expire(user_connections_key(user_id), self._ttl_s)
        pipe.execute()

    def refresh(self, connection_id: str) -> str | None:
        """Renew a live registration; the user id, or None if it is unknown or expired."""
        user_id = self._redis.get(connection_key(connection_id))
        if user_id is None:
            return None
        pipe = self._redis.pipeline(transaction=True)
        pipe.expire(connection_key(connection_id), self._ttl_s)
        pipe.expire(user_connections_key(user_id), self._ttl_s)
        pipe.execute()
        return user_id

    def unregister(self, connection_id: str) -> None:
        """Idempotent: removing an unknown connection is not an error."""
        user_id = self._redis.getdel(connection_key(connection_id))
        if user_id is not None:
            self._redis.srem(user_connections_key(user_id), connection_id)

    def user_of(self, connection_id: str) -> str | None:
        return self._redis.get(connection_key(connection_id))

    def connections_of(self, user_id: str) -> list[str]:
        """The user's current connections; expired members are pruned on the way."""
        members = sorted(self._redis.smembers(user_connections_key(user_id)))
        if not members:
            return []
        alive = self._redis.mget([connection_key(c) for c in members])
        stale = [c for c, owner in zip(members, alive) if owner != user_id]
        if stale:
            self._redis.srem(user_connections_key(user_id), *stale)
        return [c for c, owner in zip(members, alive) if owner == user_id]
