"""Powertools' idempotency records in Redis, keeping the payload check on completed records.

`RedisCachePersistenceLayer` (Powertools 3.37) writes the payload hash with the in-progress record
but leaves it out when the record completes, so a resend of the very same message would be refused
as "payload does not match". The completed record keeps it here; the rest is Powertools' own."""
from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.idempotency.persistence.redis import RedisCachePersistenceLayer


class RedisIdempotencyRecords(RedisCachePersistenceLayer):
    def _update_record(self, data_record: DataRecord) -> None:
        mapping = {self.data_attr: data_record.response_data, self.status_attr: data_record.status,
                   self.expiry_attr: data_record.expiry_timestamp}
        if self.payload_validation_enabled:
            mapping[self.validation_key_attr] = data_record.payload_hash
        self.client.set(name=data_record.idempotency_key, value=self._json_serializer(mapping),
                        ex=self._get_expiry_second(data_record.expiry_timestamp))
