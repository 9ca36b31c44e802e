"""The status catalog: a DynamoDB table the workflow (Publish, the failure path) and the CLI's S3 runs
write, and the admin API's status reads in one query however many sets are retained.

One partition per host (``pk`` = hostname). Each finished set is an item ``set#{YYYYMMDD_HHMMSS}#{id}``
(sorted by time; ``expires_at`` is its tier's S3 expiry, the table's TTL attribute). One ``summary``
item holds the last success and the last failure of each type, the failure counter, the stored
bytes and set count of each tier, and the newest sets: status's first page is that one item, one
call however many sets are retained; later pages (and one tier's sets) are a query.

The tier totals are recomputed from the set items by each success (which also deletes the items
whose sets S3 has expired), so they follow retention without reading S3. The catalog is an index,
never the truth: a set exists because its manifest does, and everything restored or downloaded is
read from S3.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from questboard_backup.address import TIERS, BackupId, timestamp
from questboard_backup.aws.failures import classify
from questboard_backup.errors import BadRequestError, ConfigurationError, StorageError, TransientStorageError
from questboard_backup.manifest import Manifest, parse_time
from questboard_backup.retention import TIER_RETENTION_DAYS

SUMMARY = "summary"
SET_PREFIX = "set#"
#: How many of the newest sets the summary item carries (status's first page without a query).
RECENT = 100
_serializer, _deserializer = TypeSerializer(), TypeDeserializer()


def set_key(backup_id: str) -> str:
    return f"{SET_PREFIX}{timestamp(BackupId.parse(backup_id).moment)}#{backup_id}"


def _plain(value: Any) -> Any:
    """DynamoDB's Decimals back to ints and floats, for JSON."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(round(value, 3)))
    if isinstance(value, dict):
        return {key: _dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_dynamo(item) for item in value]
    return value


def _item(body: dict[str, Any]) -> dict[str, Any]:
    return {key: _serializer.serialize(_dynamo(value)) for key, value in body.items()}


def _read(item: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(_deserializer.deserialize(value)) for key, value in item.items()}


def set_record(manifest: Manifest, location: str) -> dict[str, Any]:
    """What the catalog keeps of a finished set (sizes, counts, where), never a key or a secret."""
    started, finished = parse_time(manifest.started_at), parse_time(manifest.finished_at)
    expires = finished + timedelta(days=TIER_RETENTION_DAYS.get(manifest.tier, 1) + 1)
    return {
        "id": manifest.backup_id,
        "type": manifest.type,
        "tier": manifest.tier,
        "started_at": manifest.started_at,
        "finished_at": manifest.finished_at,
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "stored_bytes": manifest.stored_bytes,
        "components": [entry.name for entry in manifest.components],
        "location": location,
        "expires_at": int(expires.timestamp()),
    }


@dataclass(frozen=True)
class StatusPage:
    summary: dict[str, Any]
    sets: list[dict[str, Any]]
    next_token: str | None
    calls: int


class CatalogTable:
    """The catalog of one host in one table, through a boto3 DynamoDB client."""

    def __init__(self, table: str, hostname: str, client: Any) -> None:
        if not table:
            raise ConfigurationError("BACKUP_CATALOG_TABLE is not set")
        self.table, self.hostname, self._client = table, hostname, client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, operation)(TableName=self.table, **kwargs)
        except (BotoCoreError, ClientError) as error:
            failure = classify(error)
            if isinstance(error, ClientError) and failure.code == "ConditionalCheckFailedException":
                raise
            kind = TransientStorageError if failure.transient else StorageError
            raise kind(f"catalog table {self.table}: {failure}") from None

    def _key(self, sk: str) -> dict[str, Any]:
        return _item({"pk": self.hostname, "sk": sk})

    # Writers: Publish, the failure path, the CLI's S3 runs.

    def record_success(
        self,
        manifest: Manifest,
        location: str,
        now: datetime | None = None,
        not_configured: Sequence[str] = (),
    ) -> None:
        """``not_configured``: the components the run skipped because this deployment has no source
        for them (the status says so, instead of a complete backup)."""
        record = set_record(manifest, location)
        self._call("put_item", Item=_item({"pk": self.hostname, "sk": set_key(manifest.backup_id), **record}))
        keys = ("id", "finished_at", "duration_seconds", "stored_bytes", "tier", "components")
        last = {key: record[key] for key in keys} | {"not_configured": list(not_configured)}
        tiers, recent = self._retained(now or datetime.now(UTC))
        self._call(
            "update_item",
            Key=self._key(SUMMARY),
            UpdateExpression="SET tiers = :tiers, recent = :recent",
            # One string attribute, not a list of maps: the summary stays one small, fast item to read.
            ExpressionAttributeValues=_item({":tiers": tiers, ":recent": json.dumps(recent)}),
        )
        # An older run recorded late (a CLI run beside the workflow) never hides a newer one: the
        # condition fails (ConditionalCheckFailedException) when a newer success is recorded. Finish
        # times have whole seconds and tie often; then the later-started set (the greater id: ids of
        # one type sort by their start time) is the newer.
        with contextlib.suppress(ClientError):
            self._call(
                "update_item",
                Key=self._key(SUMMARY),
                UpdateExpression="SET #last = :last",
                ConditionExpression=(
                    "attribute_not_exists(#last) OR #last.finished_at < :finished"
                    " OR (#last.finished_at = :finished AND #last.id <= :id)"
                ),
                ExpressionAttributeNames={"#last": f"last_success_{manifest.type}"},
                ExpressionAttributeValues=_item(
                    {":last": last, ":finished": manifest.finished_at, ":id": manifest.backup_id}
                ),
            )

    def record_failure(self, kind: str, backup_id: str, error: str, at: datetime | None = None) -> None:
        """The last failure of ``kind`` and one more on the failure counter (atomic: ADD)."""
        moment = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        last = {"id": backup_id, "at": moment, "error": error[:200]}
        self._call(
            "update_item",
            Key=self._key(SUMMARY),
            UpdateExpression="SET #last = :last ADD #count :one",
            ExpressionAttributeNames={"#last": f"last_failure_{kind}", "#count": f"failures_{kind}"},
            ExpressionAttributeValues=_item({":last": last, ":one": 1}),
        )

    def record_drill(self, ok: bool, seconds: float, at: datetime | None = None) -> None:
        """A verified drill's time and measured RTO, or one more on the drill failure counter (ADD)."""
        self._record_run("drill", ok, at, {"drill_duration_seconds": Decimal(str(round(seconds, 3)))})

    def record_restore(self, ok: bool, at: datetime | None = None) -> None:
        """The last successful restore's time, or one more on the restore failure counter (ADD)."""
        self._record_run("restore", ok, at)

    def _record_run(
        self, kind: str, ok: bool, at: datetime | None, also: dict[str, Any] | None = None
    ) -> None:
        """``{kind}_last_success`` (and ``also``) set on success, ``{kind}_failures`` added to otherwise."""
        if not ok:
            self._call(
                "update_item",
                Key=self._key(SUMMARY),
                UpdateExpression="ADD #failures :one",
                ExpressionAttributeNames={"#failures": f"{kind}_failures"},
                ExpressionAttributeValues=_item({":one": 1}),
            )
            return
        fields = {
            f"{kind}_last_success": (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(also or {}),
        }
        self._call(
            "update_item",
            Key=self._key(SUMMARY),
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
            ExpressionAttributeNames={f"#f{i}": name for i, name in enumerate(fields)},
            ExpressionAttributeValues=_item({f":v{i}": value for i, value in enumerate(fields.values())}),
        )

    def _set_items(self) -> Iterator[dict[str, Any]]:
        start: dict[str, Any] | None = None
        while True:
            page = self._call(
                "query",
                KeyConditionExpression="pk = :pk AND begins_with(sk, :set)",
                ExpressionAttributeValues=_item({":pk": self.hostname, ":set": SET_PREFIX}),
                **({"ExclusiveStartKey": start} if start else {}),
            )
            yield from (_read(item) for item in page.get("Items", []))
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _retained(self, now: datetime) -> tuple[dict[str, dict[str, int]], list[dict[str, Any]]]:
        """Each tier's retained sets and bytes, and the newest RECENT sets (status's first page, read
        with the summary in one call); items of sets S3 has expired are deleted on the way."""
        totals = {tier: {"sets": 0, "stored_bytes": 0} for tier in TIERS}
        retained = []
        for item in self._set_items():
            if int(item.get("expires_at", 0)) <= now.timestamp():
                self._call("delete_item", Key=self._key(item["sk"]))
                continue
            tier = totals.setdefault(str(item["tier"]), {"sets": 0, "stored_bytes": 0})
            tier["sets"] += 1
            tier["stored_bytes"] += int(item.get("stored_bytes", 0))
            retained.append({key: value for key, value in item.items() if key != "pk"})
        retained.sort(key=lambda item: str(item["sk"]), reverse=True)
        return totals, retained[:RECENT]

    # Readers: the admin API.

    def find(self, backup_id: str) -> dict[str, Any] | None:
        item = self._call("get_item", Key=self._key(set_key(backup_id))).get("Item")
        return _public(_read(item)) if item else None

    def status_page(
        self, limit: int, token: str | None = None, tier: str | None = None, now: datetime | None = None
    ) -> StatusPage:
        """The summary and one page of retained sets, newest first. The first page of all tiers comes
        from the summary item alone (one call, however many sets exist); a later page, or one tier,
        adds one query. ``token`` is the previous page's ``next_token``."""
        moment = int((now or datetime.now(UTC)).timestamp())
        summary = _read(self._call("get_item", Key=self._key(SUMMARY)).get("Item") or {})
        stored = json.loads(str(summary.pop("recent", "[]")))
        recent = [item for item in stored if int(item.get("expires_at", 0)) > moment]
        summary.pop("pk", None)
        summary.pop("sk", None)
        retained = sum(int(usage.get("sets", 0)) for usage in (summary.get("tiers") or {}).values())
        if token is None and tier is None and (limit <= len(recent) or len(recent) >= retained):
            shown = recent[:limit]
            more = len(recent) > limit or retained > len(shown)
            next_token = _encode_token(str(shown[-1]["sk"])) if more and shown else None
            return StatusPage(summary, [_public(item) for item in shown], next_token, 1)
        values: dict[str, Any] = {":pk": self.hostname, ":set": SET_PREFIX, ":now": moment}
        condition = "attribute_not_exists(expires_at) OR expires_at > :now"
        if tier:
            condition = f"({condition}) AND tier = :tier"
            values[":tier"] = tier
        query: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :set)",
            "FilterExpression": condition,
            "ExpressionAttributeValues": _item(values),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if token:
            query["ExclusiveStartKey"] = self._key(_decode_token(token))
        page = self._call("query", **query)
        sets = [_public(item) for item in map(_read, page.get("Items", []))]
        last = page.get("LastEvaluatedKey")
        next_token = _encode_token(_read(last)["sk"]) if last else None
        return StatusPage(summary, sets, next_token, 2)


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key not in ("pk", "sk", "expires_at")}


def _encode_token(sk: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": sk}).encode()).decode().rstrip("=")


class PageTokenError(BadRequestError):
    """A ``next_token`` that no status page produced."""


def _decode_token(token: str) -> str:
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        sk = str(body["after"])
    except (ValueError, TypeError, KeyError):
        raise PageTokenError("next_token is not a token from a status page") from None
    if not sk.startswith(SET_PREFIX) or len(sk) > 200:
        raise PageTokenError("next_token is not a token from a status page")
    return sk
