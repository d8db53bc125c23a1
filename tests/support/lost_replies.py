"""A DynamoDB client whose reply to each `update_item` is lost once: the write reaches the table,
then the SDK sends the very same request again (botocore's retry after a read timeout). Every other
call goes to the client as it is."""
from __future__ import annotations


class RepliesLostOnce:
    def __init__(self, client):
        self._client = client

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def update_item(self, **request):
        self._client.update_item(**request)
        return self._client.update_item(**request)
