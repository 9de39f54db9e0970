"""Operating a deployment: ``trailgeo status`` (status.py), ``explain`` (explain.py) and ``allow``
(allow.py, with toml.py writing the tuning back).

Pure application logic over the ports :class:`~trailgeo.ports.OperationsView` (the deployment's
table) and :class:`~trailgeo.ports.TuningStore` (the tuning parameter, docs/tuning.md); the
adapters own the AWS calls (adapters/operations.py). Each command returns a plain value that the
CLI prints as aligned columns or as JSON; failures raise :class:`OperateError` with one line saying
what to do.

May import: `trailgeo.core`, `trailgeo.ports`; the standard library always.
"""

from trailgeo.app.operate.allow import (
    AllowResult,
    TuningEdit,
    TuningParameter,
    allow,
    allowed_entry,
    format_allow,
    read_tuning_parameter,
    with_entry,
    write_tuning_parameter,
)
from trailgeo.app.operate.common import OperateError, format_table
from trailgeo.app.operate.explain import StoredAlert, find_alert, format_alert, normalize_alert_id
from trailgeo.app.operate.status import ParkedAlert, PendingAlert, TableStatus, format_status, read_status
from trailgeo.app.operate.toml import entry_toml, to_toml, toml_string
from trailgeo.ports import ConcurrentChangeError

__all__ = [
    "AllowResult",
    "ConcurrentChangeError",
    "OperateError",
    "ParkedAlert",
    "PendingAlert",
    "StoredAlert",
    "TableStatus",
    "TuningEdit",
    "TuningParameter",
    "allow",
    "allowed_entry",
    "entry_toml",
    "find_alert",
    "format_alert",
    "format_allow",
    "format_status",
    "format_table",
    "normalize_alert_id",
    "read_status",
    "read_tuning_parameter",
    "to_toml",
    "toml_string",
    "with_entry",
    "write_tuning_parameter",
]
