"""The status catalog's DynamoDB table as the stack declares it (pk, sk; on demand), for tests and
benchmarks that make their own; tests/offline.py reads the keys from the synthesized template."""

from __future__ import annotations

from typing import Any


def create_catalog_table(dynamodb: Any, name: str) -> None:
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
