"""The deployment's AWS resources inside moto, created by the same code the demo uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trailgeo.demo import REGION, Deployment, deployment_environment, provision, receive_envelopes

BUCKET = "org-trail-bucket"
TABLE = "trailgeo-state"

__all__ = ["BUCKET", "REGION", "TABLE", "Deployment", "create_deployment", "environment", "receive_alerts"]


def create_deployment(session: Any) -> Deployment:
    return provision(session, bucket=BUCKET, table=TABLE)


def receive_alerts(session: Any, queue_url: str) -> list[dict[str, Any]]:
    return receive_envelopes(session, queue_url)


def environment(deployment: Deployment, geoip: str, **overrides: str) -> dict[str, str]:
    env = deployment_environment(deployment, Path(geoip))
    env["AWS_DEFAULT_REGION"] = REGION
    env.update(overrides)
    return env
