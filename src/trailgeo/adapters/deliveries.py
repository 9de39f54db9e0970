"""Which channels already have an alert: Powertools Idempotency on the detector's table.

One record per (alert id, channel) in the table's ``NOTIFIED`` partition, written by Powertools'
``DynamoDBPersistenceLayer`` (``pk`` = ``NOTIFIED``, ``sk`` = ``delivery#`` and the SHA-256 of the
alert id and channel name): ``INPROGRESS`` while a channel is being sent the alert, ``COMPLETED``
once it took it, deleted when it refused it (so that the retry sends it again). A redelivered SQS
message, an SNS duplicate or a retry in another execution environment finds the record and skips
that channel; two environments sending the same alert at once find the other's ``INPROGRESS``
record and the second defers (its message is retried, by then the record says ``COMPLETED``).

A ``COMPLETED`` record expires (``expires_at``, the table's TTL attribute) 30 days after the
delivery (``ports.OUTBOX_RETENTION``): as long as the outbox keeps a sent alert, so any message
the notifier still accepts (it reads each alert back from the outbox) finds its records; SQS keeps
a message 4 days, its dead-letter queue 14. An ``INPROGRESS`` record of an environment that died
mid-send stops counting once that invocation's time is up (Powertools' in-progress expiry, from the
Lambda context registered per invocation), so the retry sends the alert rather than deferring until
the record expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    BaseError,
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from trailgeo.observability import logger
from trailgeo.ports import OUTBOX_RETENTION, TrailgeoError

DELIVERY_PARTITION = "NOTIFIED"
KEY_PREFIX = "delivery"
DELIVERY_RETENTION = OUTBOX_RETENTION
# Without a Lambda context (a local run, a test) an in-progress record counts this long, the
# notifier function's timeout.
DEFAULT_INVOCATION_MILLIS = 60_000
Outcome = Literal["delivered", "skipped"]
_DELIVERED: dict[str, str] = {"outcome": "delivered"}
_SKIPPED: dict[str, str] = {"outcome": "skipped"}


class DeliveryInProgressError(TrailgeoError):
    """Another invocation is sending this alert to this channel now: retry the message later."""


class DeliveryRecordError(TrailgeoError):
    """The delivery record could not be read or written: the channel was not sent the alert."""


@dataclass(frozen=True, slots=True)
class _NoContext:
    """Stands in for the Lambda context until one is registered."""

    millis: int = DEFAULT_INVOCATION_MILLIS

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


def _send(*, delivery: dict[str, str], send: Callable[[], None]) -> dict[str, str]:  # noqa: ARG001 - the key
    """What Powertools runs once per (alert id, channel): ``delivery`` is only its key."""
    send()
    return _DELIVERED


def _replayed(response: Any, idempotent_data: DataRecord) -> dict[str, str]:  # noqa: ARG001 - the hook's
    """Powertools' response hook: the answer of a delivery an earlier attempt made."""
    return _SKIPPED


@dataclass(slots=True)
class DeliveryRecords:
    """Sends an alert to a channel at most once, across invocations (Powertools Idempotency)."""

    persistence: DynamoDBPersistenceLayer
    config: IdempotencyConfig
    _once: Callable[..., dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        self._once = idempotent_function(
            _send,
            data_keyword_argument="delivery",
            persistence_store=self.persistence,
            config=self.config,
            key_prefix=KEY_PREFIX,
        )

    @classmethod
    def on_table(cls, client: Any, table: str) -> DeliveryRecords:
        """Records in ``table``'s ``NOTIFIED`` partition, through ``client`` (a DynamoDB client)."""
        persistence = DynamoDBPersistenceLayer(
            table_name=table,
            key_attr="pk",
            sort_key_attr="sk",
            static_pk_value=DELIVERY_PARTITION,
            expiry_attr="expires_at",
            boto3_client=client,
        )
        config = IdempotencyConfig(
            expires_after_seconds=int(DELIVERY_RETENTION.total_seconds()),
            use_local_cache=True,  # a duplicate in the same environment costs no read
            local_cache_max_items=1024,
            hash_function="sha256",
            raise_on_no_idempotency_key=True,
            lambda_context=_NoContext(),  # type: ignore[arg-type]  # all Powertools reads of a context
            response_hook=_replayed,
        )
        return cls(persistence, config)

    def register(self, context: Any) -> None:
        """The invocation's Lambda context: its remaining time bounds an in-progress record."""
        self.config.register_lambda_context(context)

    def once(self, alert_id: str, channel: str, send: Callable[[], None]) -> Outcome:
        """``send()`` unless ``channel`` already took ``alert_id``: "delivered" (sent now) or
        "skipped" (by an earlier attempt). What ``send`` raises is raised (and the record removed);
        :class:`DeliveryInProgressError` when another invocation is sending it, and
        :class:`DeliveryRecordError` when the table could not be used before sending."""
        sent: list[bool] = []

        def attempt() -> None:
            send()
            sent.append(True)

        try:
            answer = self._once(delivery={"alert_id": alert_id, "channel": channel}, send=attempt)
        except IdempotencyAlreadyInProgressError as exc:
            raise DeliveryInProgressError(f"{channel}: being sent the alert by another invocation") from exc
        except BaseError as exc:
            if sent:  # the channel took it; only the record of it failed: a retry may send it again
                logger.warning(
                    "delivered, but not recorded", alert_id=alert_id, channel=channel, error=str(exc)[:300]
                )
                return "delivered"
            raise DeliveryRecordError(f"{channel}: delivery record unavailable: {str(exc)[:300]}") from exc
        return "skipped" if answer == _SKIPPED else "delivered"
