"""Every change of the tuning parameter is reported to the operations topic, with its diff.

Whoever can write the parameter can silence alerts (an allowlist entry, a trusted network), so
the scheduled run compares the version it reads with the one last reported (``STATE``/``TUNING``
in the table) and, when they differ, publishes who wrote the new one, whether it is valid and a
unified diff against the one reported before (docs/tuning.md). The report is claimed in the table
first, so concurrent runs send it once; a report that cannot be published is handed back, for the
next run to send. An invalid version is reported too: the attempt is worth knowing about.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

from trailgeo.core.tuning import Tuning, TuningError
from trailgeo.core.tuning_changes import TuningVersion, change_message, change_subject
from trailgeo.observability import logger
from trailgeo.ports import TrailgeoError

Seen = tuple[int, str]  # (version, digest of its text)
NOTHING_SEEN: Seen = (0, "")  # what a failed first report hands back: the next run reports again


class TuningVersions(Protocol):
    def current(self, name: str) -> TuningVersion: ...

    def versions(self, name: str, wanted: Collection[int]) -> dict[int, TuningVersion]: ...


class ReportedVersion(Protocol):
    def seen(self) -> Seen | None: ...

    def record(self, seen: Seen, expected: Seen | None) -> bool: ...


class OperationsTopic(Protocol):
    def publish(self, subject: str, message: str) -> str: ...


@dataclass(slots=True)
class TuningWatch:
    source: TuningVersions
    name: str  # the parameter's name
    reported: ReportedVersion
    topic: OperationsTopic
    _known: Seen | None = field(default=None, repr=False)  # reported, as far as this environment knows

    def check(self) -> bool:
        """Report the parameter's current version if it was not reported yet; True when this call
        reported it. Raises :class:`TrailgeoError` when it could not tell (nothing is lost: the
        version stays unreported, for the next run)."""
        current = self.source.current(self.name)
        seen = (current.version, current.digest)
        if seen == self._known:
            return False
        before = self.reported.seen()
        if before == seen or not self.reported.record(seen, before):
            self._known = seen  # reported already, or another run is reporting it now
            return False
        try:
            message_id = self._publish(current, None if before == NOTHING_SEEN else before)
        except TrailgeoError:
            self.reported.record(before or NOTHING_SEEN, seen)
            raise
        self._known = seen
        logger.warning(
            "tuning changed: reported to the operations topic",
            parameter=self.name,
            version=current.version,
            previous_version=before[0] if before else None,
            message_id=message_id,
        )
        return True

    def _publish(self, current: TuningVersion, before: Seen | None) -> str:
        source = f"SSM parameter {self.name}"
        wanted = {current.version} | ({before[0]} if before else set())
        try:
            history = self.source.versions(self.name, wanted)
        except TuningError as exc:  # no ssm:GetParameterHistory: report without who and the old text
            logger.warning("tuning history unreadable", parameter=self.name, error=str(exc)[:500])
            history = {}
        previous = history.get(before[0]) if before else None
        if previous is not None and before is not None and previous.digest != before[1]:
            previous = None  # that number holds another text now (the parameter was created again)
        written = history.get(current.version)
        if written is not None and written.digest == current.digest:
            current = written  # with who wrote it
        try:
            Tuning.parse(current.text, source=source)
            problem = None
        except TuningError as exc:
            problem = str(exc)
        message = change_message(
            source, current, previous, seen_before=before[0] if before else None, problem=problem
        )
        return self.topic.publish(change_subject(source, current.version), message)


def tuning_watch(
    parameter: str, operations_topic_arn: str, table_name: str, session: Any = None
) -> TuningWatch:
    """The watch on ``parameter``, with clients from ``session`` (a boto3 session)."""
    import boto3

    from trailgeo.adapters.operations import DynamoTuningMarker, SnsOperationsTopic
    from trailgeo.adapters.ssm import SsmTuningSource
    from trailgeo.app.wiring import CLIENT_CONFIG

    session = session or boto3.session.Session()
    return TuningWatch(
        source=SsmTuningSource(session.client("ssm", config=CLIENT_CONFIG)),
        name=parameter,
        reported=DynamoTuningMarker(session.client("dynamodb", config=CLIENT_CONFIG), table_name),
        topic=SnsOperationsTopic(session.client("sns", config=CLIENT_CONFIG), operations_topic_arn),
    )
