"""The scheduled detector: every 15 minutes, one call into trailgeo's detection run."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext

from trailgeo.app.runtime import DetectorRuntime
from trailgeo.observability import logger, metrics, tracer


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
