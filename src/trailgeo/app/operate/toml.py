"""The tuning document written back as TOML (``trailgeo allow`` re-emits it when an entry cannot
simply be appended): the version 1 schema of core/tuning.py, read back equal by ``tomllib``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from trailgeo.core.tuning import AllowedCountries, Tuning

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(value: str) -> str:
    """A TOML basic string (every control character escaped; TOML forbids them raw)."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else toml_string(key)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def entry_lines(entry: AllowedCountries) -> list[str]:
    lines = [
        "[[allowed_countries]]",
        f"principals = {_toml_value(entry.principals)}",
        f"countries = {_toml_value(entry.countries)}",
    ]
    if entry.accounts is not None:
        lines.append(f"accounts = {_toml_value(entry.accounts)}")
    if entry.until is not None:
        lines.append(f"until = {_toml_value(entry.until)}")
    if entry.note:
        lines.append(f"note = {_toml_value(entry.note)}")
    return lines


def entry_toml(entry: AllowedCountries) -> str:
    return "\n".join(entry_lines(entry)) + "\n"


def to_toml(tuning: Tuning) -> str:
    """The whole document as TOML (version 1 schema of core/tuning.py); ``tomllib`` reads it back equal."""
    lines = [f"version = {tuning.version}"]
    if tuning.description:
        lines.append(f"description = {_toml_value(tuning.description)}")
    if tuning.ignored_principals:
        lines.append(f"ignored_principals = {_toml_value(tuning.ignored_principals)}")
    if tuning.ignored_user_agents:
        agents = [entry.model_dump(exclude_defaults=True) for entry in tuning.ignored_user_agents]
        lines.append(f"ignored_user_agents = {_toml_value(agents)}")
    if tuning.trusted_cidrs:
        cidrs = [{"cidr": t.cidr, "note": t.note} if t.note else t.cidr for t in tuning.trusted_cidrs]
        lines.append(f"trusted_cidrs = {_toml_value(cidrs)}")
    if tuning.trusted_vpc_endpoint_accounts:
        accounts = list(tuning.trusted_vpc_endpoint_accounts)
        lines.append(f"trusted_vpc_endpoint_accounts = {_toml_value(accounts)}")
    for entry in tuning.allowed_countries:
        lines.extend(["", *entry_lines(entry)])
    for key, policy in tuning.methods.items():
        lines.extend(["", f"[methods.{toml_string(key)}]"])
        if policy.ignore:
            lines.append("ignore = true")
        if policy.threshold is not None:
            lines.append(f"threshold = {_toml_value(float(policy.threshold))}")
        if policy.sensitive is not None:
            lines.append(f"sensitive = {_toml_value(policy.sensitive)}")
        if policy.note:
            lines.append(f"note = {_toml_value(policy.note)}")
    return "\n".join(lines) + "\n"
