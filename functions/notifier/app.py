"""The notifier: alerts from the topic (through its SQS queue) to Slack, Security Hub, EventBridge
(the alert JSON and the OCSF Detection Finding)."""

from __future__ import annotations

import warnings
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from trailgeo.app.notify import Notifier, notifier_from_environ
from trailgeo.observability import logger, metrics, tracer

# Every notifier metric has a channel dimension, so each is written on its own (count_by) and the
# handler's flush finds no shared metric: not a problem to warn about at every invocation.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

# A batch whose every message failed is reported like a partial failure (all listed), not raised:
# SQS retries exactly the same messages either way, without an invocation error per attempt.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def notifier() -> Notifier:
    """Channels, clients, the webhook secret's cache and the delivery records: built once per
    execution environment."""
    return notifier_from_environ()


@tracer.capture_method
def record_handler(record: SQSRecord) -> None:
    """One alert to every channel; raising reports this message failed (retried by SQS)."""
    notifier().notify(record.body)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    notifier().register(context)  # a delivery in progress counts until this invocation times out
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
