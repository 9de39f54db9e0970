"""The detector: every 15 minutes, one call into trailgeo's detection run.

``lambda_handler`` is the scheduled run. ``task_handler`` is the same code as a fan-out worker
(template parameter ``FanOut``): SQS delivers it one task of a batch of CloudTrail files.
``arrivals_handler`` is the same run on arrival (template parameter ``Continuous``): the intake
queue's event source hands it one batching window's notifications; its answer reports the
messages to keep (Lambda's partial batch response), so it takes the batch whole rather than
record by record through Powertools' ``BatchProcessor``: one run per batch, so that each counter is
written once per batch and the batch's files are claimed together.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from trailgeo.app.runtime import DetectorRuntime
from trailgeo.observability import logger, metrics, tracer

# A failed task is reported, not raised: SQS delivers exactly that message again, then to the DLQ.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@cache
def runtime() -> DetectorRuntime:
    """Settings, clients and the GeoIP reader: built once per execution environment."""
    return DetectorRuntime.from_environ(os.environ)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_source(data_class=EventBridgeEvent)
def lambda_handler(event: EventBridgeEvent, context: LambdaContext) -> dict[str, Any]:
    return runtime().run(event.time, lambda: context.get_remaining_time_in_millis() / 1000.0)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def arrivals_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return runtime().run_arrivals(event, lambda: context.get_remaining_time_in_millis() / 1000.0)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def task_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    def record_handler(record: SQSRecord) -> None:
        runtime().run_task(record.body, lambda: context.get_remaining_time_in_millis() / 1000.0)

    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
