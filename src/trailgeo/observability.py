"""Logger, Tracer and Metrics, created once per process (Powertools), named by the environment.

Powertools reads ``POWERTOOLS_SERVICE_NAME`` (the ``service`` of each log line, trace and metric)
and ``POWERTOOLS_METRICS_NAMESPACE`` (the CloudWatch namespace) itself when no value is passed;
template.yaml sets both per stack, so two stacks never write the metrics each other's alarms read.
Where they are not set (the CLI, ``replay``, tests), both are ``trailgeo``. The log level is
Lambda's (``LoggingConfig.ApplicationLogLevel``, which Powertools reads from ``AWS_LAMBDA_LOG_LEVEL``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Collection, Mapping

from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.shared import constants

DEFAULT_SERVICE = "trailgeo"
OTHER = "other"  # a dimension value outside the known ones


def _unless_set(variable: str) -> str | None:
    """None (Powertools reads ``variable``) when it is set, else trailgeo's default."""
    return None if os.environ.get(variable) else DEFAULT_SERVICE


logger = Logger(service=_unless_set(constants.SERVICE_NAME_ENV))
# botocore only (AWS calls): Powertools patches every library X-Ray supports otherwise, and an HTTP
# library's subsegment records the URL, which for the Slack webhook is the secret itself.
TRACED_MODULES = ("botocore",)
_tracers: list[Tracer] = []


def __getattr__(name: str) -> Tracer:
    """``tracer``, made when first imported: the Lambda handlers import it (and so make it at cold
    start, as before); the CLI never does, and a Tracer's X-Ray SDK and its patching of botocore
    took a second of CPU of every ``trailgeo`` command (measured: 1.45 s of imports, 0.45 s without)."""
    if name != "tracer":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _tracers:
        _tracers.append(Tracer(service=_unless_set(constants.SERVICE_NAME_ENV), patch_modules=TRACED_MODULES))
    return _tracers[0]


metrics = Metrics(
    service=_unless_set(constants.SERVICE_NAME_ENV),
    namespace=_unless_set(constants.METRICS_NAMESPACE_ENV),
)


def count_by(
    name: str, dimension: str, counts: Mapping[str, int], known: Collection[str] | None = None
) -> None:
    """One metric ``name`` with a ``dimension``: a data point per value, each its own EMF document
    (Powertools gives every metric of a document the same dimensions), written now, in the
    namespace and with the service of :data:`metrics`.

    With ``known``, a value outside it is counted as ``other``: each distinct (name, value) is a
    custom metric, billed monthly, and values that come from what a run read (S3 folder names)
    must not create new ones.
    """
    bounded: Counter[str] = Counter()
    for value, count in counts.items():
        bounded[value if known is None or value in known else OTHER] += count
    for value, count in sorted(bounded.items()):
        if count <= 0:
            continue
        with single_metric(
            name=name,
            unit=MetricUnit.Count,
            value=count,
            namespace=metrics.namespace,
            default_dimensions={"service": str(metrics.service)},
        ) as metric:
            metric.add_dimension(name=dimension, value=value)
