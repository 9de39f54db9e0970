"""One detection run (a package being split along its jobs: planning, ingest, alerting, publishing)."""

from trailgeo.app.detect.alerting import (
    DEFAULT_LEASE,
    Dependencies,
    RunOptions,
    RunReport,
    country_subject,
    detect,
    finish_batch,
    new_aggregate,
    publish_pending,
    quarantined_identities,
    read_batch,
    subject_of,
)

__all__ = [
    "DEFAULT_LEASE",
    "Dependencies",
    "RunOptions",
    "RunReport",
    "country_subject",
    "detect",
    "finish_batch",
    "new_aggregate",
    "publish_pending",
    "quarantined_identities",
    "read_batch",
    "subject_of",
]
