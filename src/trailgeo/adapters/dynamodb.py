"""DynamoDB adapters: frequency counters, the processed-object ledger and the alert outbox.

One table, keys ``pk``/``sk``:

=====================  ==============  ==========================================
pk                     sk              item
=====================  ==============  ==========================================
``M#<method>``         ``C#<cc>``      a method in a country
``M#<method>``         ``TOTAL``       a method, all countries
``P#<principal>``      ``C#<cc>`` ...  a principal (or a role) in a country, and its total
``I#<cc>``             ``C#<digest>``  an identity calling from a country, and the total
``ORG``                ``C#<cc>`` ...  the organization in a country, and its total
``F#<s3 key>``         ``F``           claim of one CloudTrail object by a run (TTL)
``RUN``                ``<run id>``    a batch of files: open (lease, keys) or closed (TTL)
``STATE``              ``WATERMARK``   the last run that processed its whole window
``SUPPRESS``           ``identity|cc`` when a subject and country last alerted, its hours (TTL)
``INCIDENT``           ``<network>``   an open incident under one of its source networks (TTL)
``OUTBOX``             ``A#<id>``      an alert, pending or sent (TTL)
``TRIAGE``             ``A#<id>``      an alert's triage record (TTL; adapters/operations.py; read here
                                       only for whether a thread's alerts have one)
=====================  ==============  ==========================================

Counters are written with optimistic concurrency (``ver``): a writer that lost a race
re-reads the item and merges again, so concurrent runs never double count.

A file costs one write: its claim. It is done when the run that claimed it is closed, which
is one write for the whole batch (the outcomes other than "done" are kept, compressed, in the
closed run record), so a run writes once per counter key, once per file and three times per
batch (run record opened and closed, watermark).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from trailgeo.core.alerts import SEVERITY_LEVELS, Alert, compacted
from trailgeo.core.counters import (
    DEFAULT_HALF_LIFE_HOURS,
    EMPTY,
    CounterDelta,
    CounterKey,
    CounterState,
    apply_deltas,
    categories_folded,
    merge,
)
from trailgeo.core.scoring import History
from trailgeo.ports import (
    MAX_POISON_PER_RUN,
    MAX_REMEMBERED_HOURS,
    MAX_REMEMBERED_METHODS,
    OUTBOX_RETENTION,
    BatchTooLargeError,
    CommitStats,
    IncidentRecord,
    LedgerEntry,
    RunAttempts,
    Suppression,
    TrailgeoError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

Item = dict[str, Any]
MAX_CONFLICT_RETRIES = 8
LEDGER_RETENTION = timedelta(days=14)  # far beyond the look-back: a listed file is always known
# OUTBOX_RETENTION (ports.py) runs after an alert went out (sent) or was set aside (parked). A pending
# alert has no expiry: DynamoDB's TTL must never delete one that no channel has had
# (OldestPendingAlertMinutes reports its wait).
OUTBOX_PARTITION = "OUTBOX"
RUN_PARTITION = "RUN"
STATE_PARTITION = "STATE"
SUPPRESS_PARTITION = "SUPPRESS"
# Longer than any suppression window we accept; alerted hours stay quarantined this long.
SUPPRESS_RETENTION = timedelta(days=30)
# An incident's record, one a network: ``iid`` (its first alert), ``first`` and ``at`` (its first and
# last members' runs, ISO 8601 UTC), ``aid`` (the alert that last recorded it: compared-and-set),
# ``sev`` (highest severity), ``n`` (members), ``ms`` (sensitive methods, a list). It expires this
# long after its last member: longer than any incident window we accept (core.incidents.MAX_WINDOW).
MAX_ALERT_ID_CHARS = 128  # an alert id is 32 hex characters; a longer stored one is no id
INCIDENT_PARTITION = "INCIDENT"
# An alert's triage record (``A#<id>``), written by the operator commands (adapters/operations.py);
# the detector reads only whether one exists: a resolved thread pages anew.
TRIAGE_PARTITION = "TRIAGE"
INCIDENT_RETENTION = timedelta(days=8)
# A closed run record says its files are done: it lives as long as their claims.
RUN_RETENTION = LEDGER_RETENTION
MAX_PACKED_BYTES = 350_000  # compressed keys or outcomes of one run record (item limit 400 KB)
# An outbox item's alert JSON (item limit 400 KB). An alert's strings and lists are bounded, and so
# is its size; one over this is stored compacted (core.alerts.compacted), never refused.
MAX_ALERT_DOC_BYTES = 350_000


class StoreError(TrailgeoError):
    """DynamoDB refused an operation for a reason retries will not fix."""


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _suppression(item: Item) -> Suppression:
    """A subject's record: the hours it alerted with (``hr``) and those added since (``qh``)."""
    hours = {int(v["N"]) for v in item.get("hr", {}).get("L", [])}
    hours.update(int(v) for v in item.get("qh", {}).get("NS", []))
    return Suppression(
        at=datetime.fromisoformat(item["at"]["S"]),
        alert_id=item["aid"]["S"],
        sensitive_methods=frozenset(v["S"] for v in item.get("ms", {}).get("L", [])),
        hours=frozenset(hours),
        severity=_known_severity(item.get("sev", {}).get("S")),
        thread=_bounded_id(item.get("tid", {}).get("S")),
        paged_at=_zoned_time(item.get("pat", {}).get("S")),
    )


def _zoned_time(value: object) -> datetime | None:
    """A stored time with its zone, or None for anything else (an older record, someone else's
    write: a thread with no known page pages for a higher severity, never the other way round)."""
    if not isinstance(value, str):
        return None
    try:
        found = datetime.fromisoformat(value)
    except ValueError:
        return None
    return found if found.tzinfo is not None else None


def _bounded_id(value: object) -> str:
    """A stored alert id, or "" for anything else (a record written before threads were kept)."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ALERT_ID_CHARS else ""


def _known_severity(value: object) -> str:
    """A stored severity, or "" for anything else (an older record, someone else's write): a
    re-alert then pages, never the other way round."""
    return value if isinstance(value, str) and value in SEVERITY_LEVELS else ""


def _incident(item: Item) -> IncidentRecord | None:
    """The incident an item holds, or None when it holds none a run could have written (someone else
    wrote it: missing or mistyped attributes, an unknown severity...): never an error."""
    try:
        methods = item.get("ms", {"L": []})["L"]
        record = IncidentRecord(
            network=item["sk"]["S"],
            incident_id=item["iid"]["S"],
            first_at=datetime.fromisoformat(item["first"]["S"]),
            last_at=datetime.fromisoformat(item["at"]["S"]),
            last_alert_id=item["aid"]["S"],
            severity=item["sev"]["S"],
            members=int(item["n"]["N"]),
            sensitive_methods=frozenset(m["S"] for m in methods),
            paged_at=datetime.fromisoformat(item["pat"]["S"]) if "pat" in item else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return record if record.readable() else None


def _incident_item(record: IncidentRecord) -> Item:
    kept = record.bounded()
    return {
        "pk": {"S": INCIDENT_PARTITION},
        "sk": {"S": kept.network},
        "iid": {"S": kept.incident_id},
        "first": {"S": kept.first_at.astimezone(UTC).isoformat()},
        "at": {"S": kept.last_at.astimezone(UTC).isoformat()},
        "aid": {"S": kept.last_alert_id},
        "sev": {"S": kept.severity},
        "n": {"N": str(kept.members)},
        "ms": {"L": [{"S": m} for m in sorted(kept.sensitive_methods)]},
        **({"pat": {"S": _iso(kept.paged_at)}} if kept.paged_at is not None else {}),
        "expires_at": ttl_after(kept.last_at, INCIDENT_RETENTION),
    }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _get_items(client: DynamoDBClient, table: str, keys: Sequence[tuple[str, str]]) -> list[Item]:
    """Consistent BatchGetItem of up to 100 (pk, sk) keys, retrying what DynamoDB left unprocessed."""
    items: list[Item] = []
    request: dict[str, Any] = {
        table: {"Keys": [{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in keys], "ConsistentRead": True}
    }
    while request:
        response = client.batch_get_item(RequestItems=request)
        items.extend(response.get("Responses", {}).get(table, []))
        request = response.get("UnprocessedKeys") or {}
    return items


def conditional_write(call: Callable[..., Any], **request: Any) -> bool:
    """Run a conditional write; False (not an error) when its condition does not hold."""
    try:
        call(**request)
    except ClientError as exc:
        if error_code_of(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def ttl_after(now: datetime, keep: timedelta) -> dict[str, str]:
    return {"N": str(int((now + keep).timestamp()))}


def error_code_of(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def pack_keys(keys: Collection[str]) -> bytes:
    """A batch's keys, newline-joined and compressed: CloudTrail keys share long prefixes, so a
    run record holds thousands of them within DynamoDB's 400 KB item limit."""
    return zlib.compress("\n".join(keys).encode(), 6)


def unpack_keys(item: Item) -> list[str]:
    if "kz" in item:
        text = zlib.decompress(item["kz"]["B"]).decode()
        return text.split("\n") if text else []
    return [key["S"] for key in item.get("keys", {}).get("L", [])]  # records written before packing


def _unpack_outcomes(item: Item) -> dict[str, str]:
    if "oz" not in item:
        return {}
    outcomes = json.loads(zlib.decompress(item["oz"]["B"]))
    return {str(k): str(v) for k, v in outcomes.items()}


def counter_from_item(item: Item) -> CounterState:
    return CounterState(
        buckets=int(item["b"]["N"]),
        wsum=float(item["w"]["N"]),
        first_seen=item.get("fs", {}).get("S"),
        last_seen=item.get("ls", {}).get("S"),
        recent_hours=tuple(int(v["N"]) for v in item.get("hr", {}).get("L", [])),
        recent_runs=tuple(v["S"] for v in item.get("rn", {}).get("L", [])),
        version=int(item["ver"]["N"]),
        countries={
            cc: (int(value["L"][0]["N"]), float(value["L"][1]["N"]))
            for cc, value in item.get("cm", {}).get("M", {}).items()
        },
    )


def counter_to_item(partition: str, sort_key: str, state: CounterState) -> Item:
    item: Item = {
        "pk": {"S": partition},
        "sk": {"S": sort_key},
        "b": {"N": str(state.buckets)},
        "w": {"N": format(state.wsum, ".6f")},
        "hr": {"L": [{"N": str(h)} for h in state.recent_hours]},
        "rn": {"L": [{"S": r} for r in state.recent_runs]},
        "ver": {"N": str(state.version)},
    }
    if state.countries:
        item["cm"] = {
            "M": {
                cc: {"L": [{"N": str(buckets)}, {"N": format(wsum, ".6f")}]}
                for cc, (buckets, wsum) in sorted(state.countries.items())
            }
        }
    if state.first_seen:
        item["fs"] = {"S": state.first_seen}
    if state.last_seen:
        item["ls"] = {"S": state.last_seen}
    return item


@dataclass(slots=True)
class DynamoFrequencyStore:
    client: DynamoDBClient
    table: str
    half_life_hours: float = DEFAULT_HALF_LIFE_HOURS
    concurrency: int = 8

    def load(self, keys: Collection[CounterKey]) -> History:
        """BatchGetItem, 100 keys a call: reads grow with the counters a run touches."""
        chunks = list(_chunks(sorted(set(keys)), 100))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            pages = list(pool.map(self._get_batch, chunks))
        history: History = {}
        for page in pages:
            for item in page:
                history.setdefault(item["pk"]["S"], {})[item["sk"]["S"]] = counter_from_item(item)
        return history

    def _get_batch(self, keys: Sequence[CounterKey]) -> list[Item]:
        return _get_items(self.client, self.table, keys)

    def commit(self, deltas: Mapping[CounterKey, CounterDelta], history: History, run_id: str) -> CommitStats:
        conflicts = 0
        capped: list[tuple[str, int]] = []  # (partition, categories folded), appended by the writers

        def write_one(
            key: CounterKey, delta: CounterDelta, countries: Mapping[str, tuple[int, float]] | None
        ) -> tuple[CounterState, bool]:
            nonlocal conflicts
            known = history.get(key[0], {}).get(key[1])
            state, wrote, retries = self._write_one(key, delta, known, run_id, countries)
            conflicts += retries
            if wrote and countries is not None:
                folded = categories_folded((known or EMPTY).countries, countries, state.countries)
                if folded:
                    capped.append((key[0], folded))
            return state, wrote

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            written, skipped = apply_deltas(deltas, write_one, lambda fn, keys: list(pool.map(fn, keys)))
        return CommitStats.of(written, skipped, capped, conflicts)

    def _write_one(
        self,
        key: CounterKey,
        delta: CounterDelta,
        known: CounterState | None,
        run_id: str,
        countries: Mapping[str, tuple[int, float]] | None,
    ) -> tuple[CounterState, bool, int]:
        partition, sort_key = key
        current = known if known is not None else EMPTY
        for attempt in range(MAX_CONFLICT_RETRIES):
            merged = merge(current, delta, run_id, half_life_hours=self.half_life_hours, countries=countries)
            if merged is None:
                return current, False, attempt
            if current.version == 0:
                condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
            else:
                condition = {
                    "ConditionExpression": "ver = :v",
                    "ExpressionAttributeValues": {":v": {"N": str(current.version)}},
                }
            item = counter_to_item(partition, sort_key, merged)
            if conditional_write(self.client.put_item, TableName=self.table, Item=item, **condition):
                return merged, True, attempt
            # Someone else wrote this counter since we read it: merge into what is there now.
            response = self.client.get_item(
                TableName=self.table,
                Key={"pk": {"S": partition}, "sk": {"S": sort_key}},
                ConsistentRead=True,
            )
            stored = response.get("Item")
            current = counter_from_item(stored) if stored else EMPTY
        raise StoreError(
            f"counter {partition}/{sort_key} kept changing under {MAX_CONFLICT_RETRIES} attempts"
        )


@dataclass(slots=True)
class DynamoLedger:
    client: DynamoDBClient
    table: str
    concurrency: int = 8
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)  # this invocation's claims

    def status(self, keys: Collection[str]) -> Mapping[str, LedgerEntry]:
        """The claims among ``keys``; a claim whose run is closed is done (with its outcome)."""
        found: dict[str, LedgerEntry] = {}
        for chunk in _chunks(sorted(keys), 100):
            for item in _get_items(self.client, self.table, [(f"F#{k}", "F") for k in chunk]):
                entry = _ledger_entry(item)
                if entry.state != "released":
                    found[entry.key] = entry
        runs = self._runs({entry.run_id for entry in found.values() if entry.state == "claimed"})
        for key, entry in list(found.items()):
            if entry.state != "claimed":
                continue  # "done" entries written before runs closed their files in one write
            run = runs.get(entry.run_id)
            if run is None or run.get("st", {}).get("S") == "closed":
                # No run record: it expired with (or after) its claims, long closed.
                outcome = _unpack_outcomes(run).get(key, "done") if run is not None else "done"
                found[key] = LedgerEntry(key, "done", entry.run_id, None, outcome)
        return found

    def _runs(self, run_ids: Collection[str]) -> dict[str, Item]:
        runs: dict[str, Item] = {}
        for chunk in _chunks(sorted(run_ids), 100):
            request: dict[str, Any] = {
                self.table: {
                    "Keys": [{"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}} for run_id in chunk],
                    "ConsistentRead": True,
                    "ProjectionExpression": "#sk, #st, #oz",  # not the open runs' packed keys
                    "ExpressionAttributeNames": {"#sk": "sk", "#st": "st", "#oz": "oz"},
                }
            }
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    runs[item["sk"]["S"]] = item
                request = response.get("UnprocessedKeys") or {}
        return runs

    def watermark(self) -> datetime | None:
        item = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": STATE_PARTITION}, "sk": {"S": "WATERMARK"}},
            ConsistentRead=True,
        ).get("Item")
        return datetime.fromisoformat(item["wm"]["S"]) if item else None

    def advance_watermark(self, scheduled_at: datetime) -> None:
        stamp = scheduled_at.astimezone(UTC).isoformat()
        conditional_write(  # never moves back
            self.client.put_item,
            TableName=self.table,
            Item={"pk": {"S": STATE_PARTITION}, "sk": {"S": "WATERMARK"}, "wm": {"S": stamp}},
            ConditionExpression="attribute_not_exists(pk) OR wm < :wm",
            ExpressionAttributeValues={":wm": {"S": stamp}},
        )

    def begin(self, run_id: str, keys: Collection[str], lease_until: datetime, now: datetime) -> None:
        packed = pack_keys(keys)
        if len(packed) > MAX_PACKED_BYTES:
            raise BatchTooLargeError(
                f"run {run_id}: {len(keys)} keys pack to {len(packed)} bytes, over the run record's "
                f"{MAX_PACKED_BYTES}"
            )
        self.client.put_item(
            TableName=self.table,
            Item={
                "pk": {"S": RUN_PARTITION},
                "sk": {"S": run_id},
                "st": {"S": "open"},
                "lease": {"S": lease_until.astimezone(UTC).isoformat()},
                "kz": {"B": packed},
                "n": {"N": str(len(keys))},
                "expires_at": ttl_after(now, LEDGER_RETENTION),
            },
        )

    def expired_runs(self, now: datetime) -> list[tuple[str, list[str]]]:
        runs: list[tuple[str, list[str]]] = []
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="st = :open AND lease < :now",
            ExpressionAttributeValues={
                ":pk": {"S": RUN_PARTITION},
                ":open": {"S": "open"},
                ":now": {"S": now.astimezone(UTC).isoformat()},
            },
            ConsistentRead=True,
        ):
            runs.extend((item["sk"]["S"], unpack_keys(item)) for item in page.get("Items", []))
        return sorted(runs)

    def claim(
        self,
        keys: Collection[str],
        run_id: str,
        lease_until: datetime,
        now: datetime,
        *,
        takeover: bool = False,
    ) -> list[str]:
        """One conditional put per key, several in flight.

        (TransactWriteItems would save requests, but a transaction with one taken key fails
        whole, and moto copies every table per transaction: the demo would crawl.)
        """
        ordered = list(keys)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            results = list(
                pool.map(
                    lambda key: self._claim_one(self._claim_put(key, run_id, lease_until, now, takeover)),
                    ordered,
                )
            )
        if takeover:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}},
                # att: the takeovers so far; after failed ones the batch is read file by file
                UpdateExpression="SET lease = :lease ADD att :one",
                ExpressionAttributeValues={
                    ":lease": {"S": lease_until.astimezone(UTC).isoformat()},
                    ":one": {"N": "1"},
                },
            )
        return [key for key, won in zip(ordered, results, strict=True) if won]

    def attempts(self, run_id: str) -> RunAttempts:
        item = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}},
            ConsistentRead=True,
            ProjectionExpression="#att, #cur, #pz",
            ExpressionAttributeNames={"#att": "att", "#cur": "cur", "#pz": "pz"},
        ).get("Item", {})
        return RunAttempts(
            takeovers=int(item.get("att", {}).get("N", "0")),
            reading=item.get("cur", {}).get("S"),
            poison=frozenset(item.get("pz", {}).get("SS", ())),
        )

    def note_reading(self, run_id: str, key: str | None) -> None:
        request: dict[str, Any] = {
            "UpdateExpression": "REMOVE cur",
            "ConditionExpression": "attribute_exists(pk)",
        }
        if key is not None:
            # Only on an open run: a late attempt of a closed one must not name a file as being read.
            request = {
                "UpdateExpression": "SET cur = :key",
                "ConditionExpression": "attribute_exists(pk) AND st <> :closed",
                "ExpressionAttributeValues": {":key": {"S": key}, ":closed": {"S": "closed"}},
            }
        conditional_write(  # never recreates a record that expired
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}},
            **request,
        )

    def set_aside(self, run_id: str, key: str) -> bool:
        """``pz``, a string set, kept after the run closes (``trailgeo status`` lists it)."""
        return conditional_write(
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}},
            UpdateExpression="ADD pz :key REMOVE cur",
            ConditionExpression=(
                "attribute_exists(pk) AND (attribute_not_exists(pz) OR size(pz) < :max OR contains(pz, :one))"
            ),
            ExpressionAttributeValues={
                ":key": {"SS": [key]},
                ":one": {"S": key},
                ":max": {"N": str(MAX_POISON_PER_RUN)},
            },
        )

    def _claim_put(
        self, key: str, run_id: str, lease_until: datetime, now: datetime, takeover: bool
    ) -> dict[str, Any]:
        lease = lease_until.astimezone(UTC).isoformat()
        # "... OR this very claim": botocore retries a put whose response was lost (a timeout after
        # the write landed); the retry must see its own claim as won, or the file would stay
        # claimed by a run that never reads it. ``holder`` tells a retry from another invocation
        # that happens to plan the same batch (same run id).
        ours = "(st = :claimed AND rid = :rid AND holder = :holder)"
        values = {":claimed": {"S": "claimed"}, ":rid": {"S": run_id}, ":holder": {"S": self.holder}}
        if takeover:
            # Keys the dead run claimed and never finished, or never got to claim; never keys it
            # released (they are new again, for a fresh run).
            condition = (
                f"attribute_not_exists(pk) OR (st = :claimed AND rid = :rid AND lease < :now) OR {ours}"
            )
            values[":now"] = {"S": now.astimezone(UTC).isoformat()}
        else:
            condition = f"attribute_not_exists(pk) OR st = :released OR {ours}"
            values[":released"] = {"S": "released"}
        return {
            "TableName": self.table,
            "Item": {
                "pk": {"S": f"F#{key}"},
                "sk": {"S": "F"},
                "st": {"S": "claimed"},
                "rid": {"S": run_id},
                "lease": {"S": lease},
                "holder": {"S": self.holder},
                "expires_at": ttl_after(now, LEDGER_RETENTION),
            },
            "ConditionExpression": condition,
            "ExpressionAttributeValues": values,
        }

    def _claim_one(self, put: dict[str, Any]) -> bool:
        return conditional_write(self.client.put_item, **put)  # False: another run has it

    def release(self, keys: Collection[str], run_id: str) -> None:
        for key in keys:
            conditional_write(  # only our own claim is handed back
                self.client.update_item,
                TableName=self.table,
                Key={"pk": {"S": f"F#{key}"}, "sk": {"S": "F"}},
                UpdateExpression="SET st = :released",
                ConditionExpression="st = :claimed AND rid = :rid",
                ExpressionAttributeValues={
                    ":released": {"S": "released"},
                    ":claimed": {"S": "claimed"},
                    ":rid": {"S": run_id},
                },
            )

    def complete(self, outcomes: Mapping[str, str], run_id: str, now: datetime) -> None:
        """Close the run record: every file its run claimed and did not release is done, in one
        write. Outcomes other than "done" (skipped files and why) are kept in the record."""
        unusual = {key: outcome for key, outcome in sorted(outcomes.items()) if outcome != "done"}
        values: dict[str, Any] = {":closed": {"S": "closed"}, ":ttl": ttl_after(now, RUN_RETENTION)}
        update = "SET st = :closed, expires_at = :ttl, done_at = :at, files = :n"
        values[":at"] = {"S": now.astimezone(UTC).isoformat()}
        values[":n"] = {"N": str(len(outcomes))}
        if unusual:
            packed = zlib.compress(json.dumps(unusual, separators=(",", ":")).encode(), 6)
            if len(packed) > MAX_PACKED_BYTES:  # the reasons are in the logs; the files are done all the same
                packed = zlib.compress(json.dumps(dict(list(unusual.items())[:1000])).encode(), 6)
            update += ", oz = :oz"
            values[":oz"] = {"B": packed}
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": RUN_PARTITION}, "sk": {"S": run_id}},
            UpdateExpression=update + " REMOVE #keys, kz, cur",
            ExpressionAttributeNames={"#keys": "keys"},
            ExpressionAttributeValues=values,
        )


def _ledger_entry(item: Item) -> LedgerEntry:
    lease = item.get("lease", {}).get("S")
    return LedgerEntry(
        key=item["pk"]["S"][2:],
        state=item["st"]["S"],
        run_id=item["rid"]["S"],
        lease_until=datetime.fromisoformat(lease) if lease else None,
        outcome=item.get("outcome", {}).get("S"),
    )


@dataclass(slots=True)
class DynamoOutbox:
    client: DynamoDBClient
    table: str
    clock: Any = None  # Callable[[], datetime]; None means the wall clock

    def _now(self) -> datetime:
        return self.clock() if self.clock is not None else datetime.now(tz=UTC)

    def put(self, alert: Alert) -> bool:
        doc = alert.to_json()
        if len(doc.encode()) > MAX_ALERT_DOC_BYTES:
            doc = compacted(alert).to_json()
        return conditional_write(
            self.client.put_item,
            TableName=self.table,
            Item={
                "pk": {"S": OUTBOX_PARTITION},
                "sk": {"S": f"A#{alert.alert_id}"},
                "st": {"S": "pending"},
                "doc": {"S": doc},
                "created": {"S": self._now().isoformat()},
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def pending(self) -> list[Alert]:
        """Oldest detection first, then in the order queued (a run queues its most urgent first)."""
        alerts: list[tuple[Alert, str]] = []  # and when it was queued
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="st = :pending",
            ExpressionAttributeValues={":pk": {"S": OUTBOX_PARTITION}, ":pending": {"S": "pending"}},
            ConsistentRead=True,
        ):
            for item in page.get("Items", []):
                try:
                    alert = Alert.model_validate_json(item.get("doc", {}).get("S", ""))
                except ValidationError:  # not an alert of this version: it must not hold back the others
                    self.park(item["sk"]["S"].removeprefix("A#"), "invalid_document")
                    continue
                alerts.append((alert, item.get("created", {}).get("S", "")))
        alerts.sort(key=lambda queued: (queued[0].detected_at, queued[1], queued[0].alert_id))
        return [alert for alert, _ in alerts]

    def park(self, alert_id: str, reason: str) -> None:
        now = self._now()
        conditional_write(  # only a pending alert: one another publisher has sent stays sent
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{alert_id}"}},
            UpdateExpression="SET st = :parked, parked_reason = :why, parked_at = :at, expires_at = :ttl",
            ConditionExpression="st = :pending",
            ExpressionAttributeValues={
                ":parked": {"S": "parked"},
                ":pending": {"S": "pending"},
                ":why": {"S": reason[:500]},
                ":at": {"S": now.isoformat()},
                ":ttl": ttl_after(now, OUTBOX_RETENTION),
            },
        )

    def recent(self, subjects: Collection[str]) -> Mapping[str, Suppression]:
        found: dict[str, Suppression] = {}
        for chunk in _chunks(sorted(set(subjects)), 100):
            for item in _get_items(self.client, self.table, [(SUPPRESS_PARTITION, s) for s in chunk]):
                found[item["sk"]["S"]] = _suppression(item)
        return found

    def resolved(self, alert_ids: Collection[str]) -> frozenset[str]:
        found: set[str] = set()
        for chunk in _chunks(sorted(set(alert_ids)), 100):
            for item in _get_items(self.client, self.table, [(TRIAGE_PARTITION, f"A#{a}") for a in chunk]):
                found.add(item["sk"]["S"].removeprefix("A#"))
        return frozenset(found)

    def extend_quarantine(self, subject: str, alert_id: str, hours: Collection[int]) -> None:
        if not hours:
            return
        # ADD to a number set is a union made by DynamoDB: two invocations extending the same
        # subject at once both keep their hours. Only while ``alert_id`` is still the last alert.
        conditional_write(
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": SUPPRESS_PARTITION}, "sk": {"S": subject}},
            UpdateExpression="ADD qh :hours",
            ConditionExpression="aid = :aid",
            ExpressionAttributeValues={
                ":hours": {"NS": [str(h) for h in sorted(set(hours))[-MAX_REMEMBERED_HOURS:]]},
                ":aid": {"S": alert_id},
            },
        )

    def _items_since(self, partition: str, since: datetime) -> Iterator[Item]:
        """A consistent Query of one partition's items whose ``at`` (their last run) is ``since`` or
        later: the subjects' last alerts, as recent() reads them, and the open incidents."""
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            FilterExpression="#at >= :since",
            ExpressionAttributeNames={"#at": "at"},
            ExpressionAttributeValues={
                ":pk": {"S": partition},
                ":since": {"S": since.astimezone(UTC).isoformat()},
            },
            ConsistentRead=True,
        ):
            yield from page.get("Items", [])

    def alerted_since(self, since: datetime) -> Mapping[str, Suppression]:
        return {item["sk"]["S"]: _suppression(item) for item in self._items_since(SUPPRESS_PARTITION, since)}

    def remember(self, subject: str, suppression: Suppression, expected_alert_id: str | None) -> bool:
        """A compare-and-set on the subject's item: two invocations deciding on the same subject at
        once (fan-out reduces) cannot both record an alert for it."""
        methods = sorted(suppression.sensitive_methods)[:MAX_REMEMBERED_METHODS]
        hours = sorted(suppression.hours)[-MAX_REMEMBERED_HOURS:]
        if expected_alert_id is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "aid = :expected",
                "ExpressionAttributeValues": {":expected": {"S": expected_alert_id}},
            }
        return conditional_write(
            self.client.put_item,
            TableName=self.table,
            Item={
                "pk": {"S": SUPPRESS_PARTITION},
                "sk": {"S": subject},
                "at": {"S": suppression.at.astimezone(UTC).isoformat()},
                "aid": {"S": suppression.alert_id},
                "ms": {"L": [{"S": m} for m in methods]},
                "hr": {"L": [{"N": str(h)} for h in hours]},
                **({"sev": {"S": suppression.severity}} if suppression.severity else {}),
                **({"tid": {"S": suppression.thread}} if suppression.thread else {}),
                **({"pat": {"S": _iso(suppression.paged_at)}} if suppression.paged_at is not None else {}),
                "expires_at": ttl_after(suppression.at, SUPPRESS_RETENTION),
            },
            **condition,
        )

    def open_incidents(self, since: datetime) -> Mapping[str, IncidentRecord]:
        """A consistent Query of the ``INCIDENT`` partition, filtered on the last member's run."""
        found: dict[str, IncidentRecord] = {}
        for item in self._items_since(INCIDENT_PARTITION, since):
            record = _incident(item)
            if record is not None and record.last_at >= since:
                found[record.network] = record
        return found

    def incidents(self, networks: Collection[str]) -> Mapping[str, IncidentRecord]:
        found: dict[str, IncidentRecord] = {}
        for chunk in _chunks(sorted(set(networks)), 100):
            for item in _get_items(self.client, self.table, [(INCIDENT_PARTITION, n) for n in chunk]):
                record = _incident(item)
                if record is not None:
                    found[record.network] = record
        return found

    def remember_incident(self, record: IncidentRecord, expected_alert_id: str | None) -> bool:
        """A compare-and-set on the network's item, as ``remember`` on a subject's."""
        if expected_alert_id is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "aid = :expected",
                "ExpressionAttributeValues": {":expected": {"S": expected_alert_id}},
            }
        return conditional_write(
            self.client.put_item, TableName=self.table, Item=_incident_item(record), **condition
        )

    def claim_publish(self, alert_id: str, holder: str, until: datetime, now: datetime) -> bool:
        return conditional_write(
            self.client.update_item,
            TableName=self.table,
            Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{alert_id}"}},
            # REMOVE: an alert queued by a version that set its expiry at once keeps it no longer.
            UpdateExpression="SET pub_holder = :holder, pub_until = :until REMOVE expires_at",
            # Still pending, and nobody else publishing it (or they died: their lease has passed).
            ConditionExpression=(
                "st = :pending AND "
                "(attribute_not_exists(pub_until) OR pub_until < :now OR pub_holder = :holder)"
            ),
            ExpressionAttributeValues={
                ":pending": {"S": "pending"},
                ":holder": {"S": holder},
                ":until": {"S": until.astimezone(UTC).isoformat()},
                ":now": {"S": now.astimezone(UTC).isoformat()},
            },
        )

    def mark_sent(self, alert_id: str, message_id: str) -> None:
        now = self._now()
        self.client.update_item(
            TableName=self.table,
            Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{alert_id}"}},
            UpdateExpression="SET st = :sent, message_id = :mid, sent_at = :at, expires_at = :ttl",
            ExpressionAttributeValues={
                ":sent": {"S": "sent"},
                ":mid": {"S": message_id},
                ":at": {"S": now.isoformat()},
                ":ttl": ttl_after(now, OUTBOX_RETENTION),
            },
        )

    def get(self, alert_id: str) -> Alert | None:
        """The alert the detector queued under ``alert_id`` (the notifier checks what the topic
        delivers against it), or None when there is none, or when the item holds no valid alert
        (written by someone else: it vouches for nothing)."""
        item = self.client.get_item(
            TableName=self.table,
            Key={"pk": {"S": OUTBOX_PARTITION}, "sk": {"S": f"A#{alert_id}"}},
            ProjectionExpression="#doc",
            ExpressionAttributeNames={"#doc": "doc"},
            ConsistentRead=True,
        ).get("Item")
        if not item:
            return None
        try:
            return Alert.model_validate_json(item["doc"]["S"])
        except ValidationError:  # the notifier refuses the message and logs it (not_in_outbox)
            return None
