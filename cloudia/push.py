"""Post events to a user's current WebSocket connections through the API Gateway Management API.

The endpoint is API Gateway's `https://{api}.execute-api.{region}.amazonaws.com/{stage}` on AWS and the
local gateway (`http://localhost:8080`, serving the same `/@connections/{id}`) locally. A gone connection
(410 GoneException) is not a failure: the user reconnected or left, the answer stays in the history for
`resume`, and the stale registration is dropped.
"""
from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError

from cloudia import protocol
from cloudia.connections import ConnectionRegistry

logger = logging.getLogger(__name__)


class Pusher:
    def __init__(self, management_api, registry: ConnectionRegistry):
        self._api = management_api
        self._registry = registry

    def connections_of(self, user_id: str) -> list[str]:
        try:
            return self._registry.connections_of(user_id)
        except Exception as error:  # noqa: BLE001 - Redis down: nobody to tell now, history keeps it
            logger.warning("connections of %s unknown (Redis): %s", user_id, error)
            return []

    def post(self, connection_id: str, frame: dict) -> bool:
        """Send one frame to one connection; True if it was delivered."""
        try:
            self._api.post_to_connection(ConnectionId=connection_id, Data=protocol.dumps(frame).encode())
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "GoneException":
                logger.info("connection %s is gone", connection_id)
                try:
                    self._registry.unregister(connection_id)
                except Exception:  # noqa: BLE001 - the TTL removes it anyway
                    pass
                return False
            logger.warning("push to %s failed: %s", connection_id, error)
            return False
        except BotoCoreError as error:
            logger.warning("push to %s failed: %s", connection_id, error)
            return False

    def push(self, user_id: str, frame: dict, connection_ids: list[str] | None = None) -> int:
        """Send `frame` to the user's current connections (or the ones given); how many got it."""
        targets = self.connections_of(user_id) if connection_ids is None else connection_ids
        return sum(self.post(c, frame) for c in targets)
