"""The emulator's DynamoDB (local_runtime/moto_server.py) as DynamoDB behaves: conditional writes
to one item at once are atomic, one winner each, writes to other items all land; a Query reads one
partition, in sort-key order either way, paged by `Limit` and `ExclusiveStartKey`; a table without
a sort key answers with its one item."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config

from cloudia.schema import HISTORY_PARTITION_KEY, HISTORY_SORT_KEY, JOBS_PARTITION_KEY


def test_a_query_answers_its_partition_only_in_order_and_paged(settings):
    # GIVEN a table of three partitions, their items written out of order and interleaved
    db = boto3.client("dynamodb")
    for n in (5, 1, 4, 2, 3):
        for partition in ("a", "b", "c"):
            db.put_item(TableName=settings.history_table, Item={
                HISTORY_PARTITION_KEY: {"S": partition}, HISTORY_SORT_KEY: {"S": f"{n:03d}"},
                "n": {"N": str(n)}})

    def query(partition: str, **kwargs) -> dict:
        return db.query(TableName=settings.history_table, KeyConditionExpression="#pk = :pk",
                        ExpressionAttributeNames={"#pk": HISTORY_PARTITION_KEY},
                        ExpressionAttributeValues={":pk": {"S": partition}}, **kwargs)

    def sort_keys(reply: dict) -> list[str]:
        return [item[HISTORY_SORT_KEY]["S"] for item in reply["Items"]]

    # WHEN one partition is queried forward, backward, and in pages of two
    forward, backward = query("b"), query("b", ScanIndexForward=False)
    pages, start = [], {}
    while True:
        reply = query("c", Limit=2, **start)
        pages.append(sort_keys(reply))
        if "LastEvaluatedKey" not in reply:
            break
        start = {"ExclusiveStartKey": reply["LastEvaluatedKey"]}

    # THEN each answer holds that partition's items only, in sort-key order
    assert sort_keys(forward) == ["001", "002", "003", "004", "005"]
    assert {item[HISTORY_PARTITION_KEY]["S"] for item in forward["Items"]} == {"b"}
    assert sort_keys(backward) == ["005", "004", "003", "002", "001"]
    assert [key for page in pages for key in page] == ["001", "002", "003", "004", "005"]
    assert all(len(page) <= 2 for page in pages)
    # AND a partition with no items answers with none
    assert query("z")["Items"] == []


def test_a_query_of_a_table_without_a_sort_key_answers_its_one_item(settings):
    db = boto3.client("dynamodb")
    for job_id in ("job-1", "job-2"):
        db.put_item(TableName=settings.jobs_table, Item={JOBS_PARTITION_KEY: {"S": job_id}, "v": {"S": job_id}})

    reply = db.query(TableName=settings.jobs_table, KeyConditionExpression="#k = :k",
                     ExpressionAttributeNames={"#k": JOBS_PARTITION_KEY},
                     ExpressionAttributeValues={":k": {"S": "job-2"}})

    assert [item["v"]["S"] for item in reply["Items"]] == ["job-2"]
    # AND a Scan still sees the whole table
    assert reply["Count"] == 1
    assert len(db.scan(TableName=settings.jobs_table)["Items"]) == 2


def test_conditional_writes_at_once_have_one_winner_per_item_and_every_item_its_own(settings):
    # GIVEN eight threads per item, for four items, each trying to claim its item first
    db = boto3.client("dynamodb", config=Config(max_pool_connections=32))
    start = threading.Barrier(32)

    def claim(item: int, claimant: int) -> bool:
        start.wait()
        try:
            db.update_item(TableName=settings.jobs_table, Key={JOBS_PARTITION_KEY: {"S": f"claimed-{item}"}},
                           UpdateExpression="SET claimant = :me ADD claims :one",
                           ConditionExpression="attribute_not_exists(claimant)",
                           ExpressionAttributeValues={":me": {"N": str(claimant)}, ":one": {"N": "1"}})
            return True
        except db.exceptions.ConditionalCheckFailedException:
            return False

    # WHEN they all write at once
    with ThreadPoolExecutor(32) as pool:
        won = list(pool.map(lambda n: (n % 4, claim(n % 4, n)), range(32)))

    # THEN each item has exactly one winner, and its row shows that one write only
    assert sorted(item for item, ok in won if ok) == [0, 1, 2, 3]
    for item in range(4):
        row = db.get_item(TableName=settings.jobs_table, Key={JOBS_PARTITION_KEY: {"S": f"claimed-{item}"}},
                          ConsistentRead=True)["Item"]
        assert row["claims"] == {"N": "1"}
