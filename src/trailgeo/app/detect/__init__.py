"""One detection run: :func:`detect` (``run``), and the names handlers, tools and tests import.

The package, by job:

* ``context``: what a run is given (``RunOptions``, ``Dependencies``) and reports (``RunReport``);
* ``plan``: takeovers and new files, batched and claimed under run ids; deferral;
* ``intake``: new files from the notification queue, reconciliation, messages settled;
* ``ingest``: a batch's files read, decoded and aggregated (file by file after failed attempts);
* ``alerting``: scoring, suppression, quarantine, correlation, roll-up, outbox writes;
* ``publish``: the outbox's pending alerts sent to the alerts channel;
* ``run``: one run (scheduled, or on arrival: ``detect_arrivals``), and one batch's
  score-commit-close (``finish_batch``, the fan-out's too).

May import: `trailgeo.core`, `trailgeo.ports`, `trailgeo.observability`; the standard library
always. Never an adapter or boto3: handlers, tools and tests hand it ``Dependencies``.
"""

from trailgeo.app.detect.alerting import (
    SuppressionRaceError,
    alert_subject,
    country_subject,
    quarantined_identities,
    subject_of,
)
from trailgeo.app.detect.context import DEFAULT_LEASE, Dependencies, Dispatch, RunOptions, RunReport
from trailgeo.app.detect.ingest import new_aggregate, read_batch
from trailgeo.app.detect.plan import run_id_for
from trailgeo.app.detect.publish import PUBLISH_LEASE, publish_pending
from trailgeo.app.detect.run import detect, detect_arrivals, finish_batch

__all__ = [
    "DEFAULT_LEASE",
    "PUBLISH_LEASE",
    "Dependencies",
    "Dispatch",
    "RunOptions",
    "RunReport",
    "SuppressionRaceError",
    "alert_subject",
    "country_subject",
    "detect",
    "detect_arrivals",
    "finish_batch",
    "new_aggregate",
    "publish_pending",
    "quarantined_identities",
    "read_batch",
    "run_id_for",
    "subject_of",
]
