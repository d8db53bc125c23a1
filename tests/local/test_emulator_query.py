"""The emulator's Query reads one partition (local_runtime/moto_server.py) and answers as DynamoDB
does: the partition's items only, in sort-key order either way, paged by `Limit` and
`ExclusiveStartKey`; a table without a sort key answers with its one item."""
from __future__ import annotations

import boto3

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
