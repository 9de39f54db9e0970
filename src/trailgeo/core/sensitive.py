"""Attack-relevant AWS methods and the MITRE ATT&CK tactics they serve.

The catalogue is TrailDiscover's list of CloudTrail events used in real attacks (CC BY 4.0,
see ``data/attack_methods.json`` and NOTICE), reduced to ``eventSource:eventName`` and tactics.

A method is **sensitive** when it serves one of the tactics that turn a stolen key into a lasting
compromise: persistence, privilege escalation, defence evasion (CloudTrail and GuardDuty
tampering) and credential access (IAM and credential changes, secrets). One the identity never
called raises an alert's severity (core/evidence.py), and any may re-alert within the suppression
window. Discovery, collection, impact,
exfiltration and the rest are listed in alerts with their tactics, but are everyday work for
many teams (``RunInstances``, ``GetObject``) and would make every engineer's trip page twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

SENSITIVE_TACTICS = frozenset({"Persistence", "Privilege Escalation", "Defense Evasion", "Credential Access"})


@dataclass(frozen=True, slots=True)
class AttackMethod:
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]

    @property
    def sensitive(self) -> bool:
        return any(t in SENSITIVE_TACTICS for t in self.tactics)


@cache
def attack_methods() -> dict[str, AttackMethod]:
    text = resources.files("trailgeo").joinpath("data/attack_methods.json").read_text(encoding="utf-8")
    document = json.loads(text)
    return {
        method: AttackMethod(tuple(entry["tactics"]), tuple(entry["techniques"]))
        for method, entry in document["methods"].items()
    }


def tactics_of(method: str) -> tuple[str, ...]:
    found = attack_methods().get(method)
    return found.tactics if found else ()


def is_sensitive(method: str, override: bool | None = None) -> bool:
    """Whether a method is sensitive; ``override`` (from the tuning file) wins when set."""
    if override is not None:
        return override
    found = attack_methods().get(method)
    return found is not None and found.sensitive
