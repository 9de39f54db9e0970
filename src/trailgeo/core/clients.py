"""Client families: what kind of program made a call, from its ``userAgent``, coarse enough that a
person's own tools keep one family across upgrades and fine enough that another person's tools
do not share it.

A family is the product (AWS CLI, an AWS SDK by language, Terraform, a browser, the console...),
its major version and the operating system's family: ``aws-cli/2 linux``, ``boto3/1 macos``,
``browser windows``. The vocabulary is closed (:data:`PRODUCTS` and four OS families): the
``userAgent`` is the caller's to write, and a family is stored per identity, so a caller who sends
a thousand made-up agents must not make a thousand items. Anything unrecognised is ``other``.

Calls AWS makes on a principal's behalf (``AWS Internal``, a service's host name, the console's
own back end) are no client of the person: they have no family (``None``) and never count as a
new client.

Imports: the standard library only.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

# (family name, pattern matching the agent's product token and capturing its major version).
# Order matters: the first match wins (boto3 agents also carry ``Botocore/``; Terraform's carry
# ``aws-sdk-go-v2``; the CLI's carry ``botocore``).
PRODUCTS: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("terraform", r"\bTerraform/(\d+)"),
        ("pulumi", r"\bPulumi/(\d+)"),
        ("cdk", r"\baws-cdk/(\d+)"),
        ("aws-cli", r"^aws-cli/(\d+)"),
        ("powershell", r"\bAWSPowerShell(?:\.Common)?/(\d+)"),
        ("cloudshell", r"\bCloudShell/?(\d*)"),
        ("boto3", r"\bBoto3/(\d+)"),
        ("botocore", r"^Botocore/(\d+)"),
        ("aws-sdk-go-v2", r"\baws-sdk-go-v2/(\d+)"),
        ("aws-sdk-go", r"\baws-sdk-go/(\d+)"),
        ("aws-sdk-java", r"\baws-sdk-java/(\d+)"),
        ("aws-sdk-js", r"\baws-sdk-(?:js|nodejs)/(\d+)"),
        ("aws-sdk-dotnet", r"\baws-sdk-dotnet(?:-\w+)?/(\d+)"),
        ("aws-sdk-ruby", r"\baws-sdk-ruby(\d+)"),
        ("aws-sdk-php", r"\baws-sdk-php/(\d+)"),
        ("aws-sdk-rust", r"\baws-sdk-rust/(\d+)"),
        ("aws-sdk-cpp", r"\baws-sdk-cpp/(\d+)"),
        ("python-requests", r"^python-requests/(\d+)"),
        ("curl", r"^curl/(\d+)"),
        ("go-http", r"^Go-http-client/(\d+)"),
        ("browser", r"^Mozilla/(\d+)"),
    )
)
_OS_FAMILIES: Final = (
    ("windows", re.compile(r"windows|win64|win32", re.IGNORECASE)),
    ("macos", re.compile(r"darwin|macos|mac os x|macintosh", re.IGNORECASE)),
    ("linux", re.compile(r"linux|ubuntu|debian|android", re.IGNORECASE)),
)
# AWS acting for the principal, not a program the person runs.
_SERVICE_AGENTS: Final = re.compile(
    r"^(AWS Internal|[a-z0-9.-]+\.amazonaws\.com|[a-z0-9.-]+\.aws\.internal|aws-internal/\d.*|Coral/.*|"
    r"S3Console/.*|AWSConsole.*|console\.aws\.amazon\.com)$",
    re.IGNORECASE,
)
OTHER: Final = "other"
# How much of an agent is read: families are found in its first few hundred characters, and an
# attacker's 1 MB agent must not cost a 1 MB regex scan per event.
_READ_CHARS: Final = 512


def client_family(user_agent: str | None) -> str | None:
    """The client family of a ``userAgent``; None for AWS's own calls and for no agent at all."""
    if not user_agent:
        return None
    return _family_of_head(user_agent[:_READ_CHARS])


# Families worked out once per process (a replay, a warm Lambda) for the agents met most recently:
# at most this many heads of _READ_CHARS characters are kept, the answer a function of the head.
FAMILY_CACHE_ENTRIES = 2048


@lru_cache(maxsize=FAMILY_CACHE_ENTRIES)
def _family_of_head(head: str) -> str | None:
    agent = head.strip()
    if not agent or _SERVICE_AGENTS.match(agent):
        return None
    for name, pattern in PRODUCTS:
        found = pattern.search(agent)
        if found is not None:
            major = found.group(1)[:2]  # the caller writes the digits: a bounded vocabulary
            product = name if name == "browser" or not major else f"{name}/{major}"
            return f"{product} {_os_family(agent)}"
    return OTHER


def _os_family(agent: str) -> str:
    for name, pattern in _OS_FAMILIES:
        if pattern.search(agent):
            return name
    return OTHER
