"""Settings: one pydantic model, validated from the environment once per cold start."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trailgeo.app.detect import DEFAULT_LEASE, RunOptions
from trailgeo.app.fanout import FANOUT_LEASE
from trailgeo.core.categories import EventScope
from trailgeo.core.detectors import DETECTORS
from trailgeo.core.incidents import MAX_WINDOW as MAX_INCIDENT_WINDOW
from trailgeo.core.records import MAX_RECORDS_PER_FILE
from trailgeo.core.scoring import ScoringPolicy

# Records one batch may decode (RunOptions.batch_records): at least one file of the most records a
# file may hold; at most what the largest function (10,240 MB) holds at the measured 151 MB per
# million events, beside one file's decoding (docs/cost-and-capacity.md#capacity).
BATCH_RECORDS_MAX = 60_000_000


class SettingsError(ValueError):
    """The environment does not describe a usable deployment; the message says what to fix."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    trail_bucket: str = Field(min_length=3, max_length=63)
    trail_prefix: str = ""
    table_name: str = Field(min_length=3, max_length=255)
    topic_arn: str = Field(pattern=r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$")
    geoip_db_path: Path = Path("/opt/geoip/country.mmdb")
    # An ASN database (the GeoIpLayer's /opt/geoip/asn.mmdb, GeoLite2-ASN...): the hosting-provider
    # evidence of alerts (docs/scoring.md). Optional: unset or empty, the factor is off; missing or
    # unreadable, it is off and the cold start logs why, and the country detection runs as ever.
    geoip_asn_path: Path | None = None
    lookback_minutes: int = Field(default=120, ge=15, le=24 * 60)
    score_threshold: float = Field(default=50.0, ge=0, le=100)
    learning_buckets: int = Field(default=20, ge=0)
    learning_days: float = Field(default=7.0, ge=0)
    max_decompressed_mb: int = Field(default=512, ge=1, le=8192)
    read_concurrency: int = Field(default=8, ge=1, le=64)
    batch_records: int = Field(
        default=RunOptions().batch_records, ge=MAX_RECORDS_PER_FILE, le=BATCH_RECORDS_MAX
    )
    suppress_hours: float = Field(default=24.0, ge=0, le=7 * 24)
    # Alerts linked by source network within this many hours of an incident's last member are one
    # incident (docs/scoring.md#incidents); 0 links nothing.
    incident_hours: float = Field(default=24.0, ge=0, le=MAX_INCIDENT_WINDOW.total_seconds() / 3600)
    # A thread's first notification below PAGING_SEVERITY (the template's PagingSeverity) waits
    # SETTLE_MINUTES, so that what joins it meanwhile goes out inside it (docs/notifications.md); 0
    # sends at once.
    paging_severity: Literal["medium", "high", "critical"] = "high"
    settle_minutes: int = Field(default=15, ge=0, le=60)
    # Allowlists and per-method overrides (docs/tuning.md): an SSM parameter name, or a file
    # deployed with the function. Read at every run, so an edit applies on the next run.
    tuning_parameter: str = Field(default="", max_length=2048)
    tuning_file: Path | None = None
    # Each new version of the tuning parameter is reported here, with its diff (app/tuning_watch.py).
    operations_topic_arn: str = Field(
        default="", pattern=r"^$|^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$"
    )
    # Sibling detectors fed by the same pass (docs/scoring.md): "country" always runs.
    detectors: str = "country"
    # Management: data and network activity events are skipped and counted; All: scored too
    events: EventScope = EventScope.MANAGEMENT
    user_method_threshold: float = Field(default=75.0, ge=0, le=100)
    # Fan-out mode (docs/cost-and-capacity.md): the scheduled run plans and sends tasks to this
    # queue; workers of the same code read them and leave partial aggregates in the bucket.
    fanout_queue_url: str = Field(default="", max_length=2048)
    partials_bucket: str = Field(default="", max_length=63)
    files_per_task: int = Field(default=200, ge=1, le=2000)
    # Intake (docs/configuration.md#intake): List lists the window every run; Notifications drains
    # INTAKE_QUEUE_URL (the trail's SNS notifications, or EventBridge's Object Created) and lists
    # the window once every RECONCILE_MINUTES (a multiple of the 15-minute schedule).
    intake: Literal["List", "Notifications"] = "List"
    intake_queue_url: str = Field(default="", max_length=2048)
    intake_max_messages: int = Field(default=RunOptions().intake_messages, ge=10, le=500_000)
    reconcile_minutes: int = Field(default=60, ge=15, le=24 * 60, multiple_of=15)

    @model_validator(mode="after")
    def _fanout_needs_both(self) -> Settings:
        if bool(self.fanout_queue_url) != bool(self.partials_bucket):
            raise ValueError("fan-out mode needs both FANOUT_QUEUE_URL and PARTIALS_BUCKET")
        return self

    @model_validator(mode="after")
    def _notifications_need_a_queue(self) -> Settings:
        if self.intake == "Notifications" and not self.intake_queue_url:
            raise ValueError("INTAKE=Notifications needs INTAKE_QUEUE_URL")
        return self

    @property
    def fanout(self) -> bool:
        return bool(self.fanout_queue_url)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, value: str) -> str:
        names = {name.strip() for name in value.split(",") if name.strip()} | {"country"}
        unknown = names - DETECTORS
        if unknown:
            raise ValueError(f"unknown detector(s) {sorted(unknown)}; known: {sorted(DETECTORS)}")
        return ",".join(sorted(names))

    @field_validator("geoip_asn_path", mode="before")
    @classmethod
    def _empty_asn_path_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trail_prefix")
    @classmethod
    def _prefix_ends_with_slash(cls, value: str) -> str:
        value = value.strip().lstrip("/")
        return value if not value or value.endswith("/") else value + "/"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Settings:
        values = {name: environ[name.upper()] for name in cls.model_fields if name.upper() in environ}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid trailgeo configuration: {problems}") from exc

    def run_options(self) -> RunOptions:
        return RunOptions(
            lookback=timedelta(minutes=self.lookback_minutes),
            policy=ScoringPolicy(
                threshold=self.score_threshold,
                learning_buckets=self.learning_buckets,
                learning_days=self.learning_days,
                user_method_threshold=self.user_method_threshold,
            ),
            detectors=frozenset(self.detectors.split(",")),
            events=self.events,
            max_decompressed_bytes=self.max_decompressed_mb * 1024 * 1024,
            read_concurrency=self.read_concurrency,
            batch_records=self.batch_records,
            suppress_for=timedelta(hours=self.suppress_hours),
            incident_window=timedelta(hours=self.incident_hours),
            paging_severity=self.paging_severity,
            settle=timedelta(minutes=self.settle_minutes),
            # A fanned-out batch is not taken over while SQS may still deliver its tasks.
            lease=FANOUT_LEASE if self.fanout else DEFAULT_LEASE,
            intake_messages=self.intake_max_messages,
            reconcile_every=timedelta(minutes=self.reconcile_minutes),
        )
