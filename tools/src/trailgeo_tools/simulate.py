"""Deterministic simulator of an organization's CloudTrail history, in the S3 delivery layout.

It writes what an organization trail writes to its bucket: gzip-compressed ``{"Records": [...]}`` log files
per account and region, one per delivery slot that has events, plus hourly CloudTrail-Digest files that
consumers must skip. The history is shaped like a real organization's, not like random noise:

* Humans (SSO assumed-role sessions and a couple of IAM users with long-term ``AKIA`` keys), each with a
  home country and time zone (fixed UTC offsets; daylight saving time is ignored), 1-3 stable public IPs of
  that country, office hours on weekdays (a little evening on-call, rare weekend sessions), a stable set of
  user agents (AWS CLI v2, console, boto3, Terraform) and a role-typical method mix drawn from a catalogue
  of real ``eventSource``/``eventName`` pairs with zipf-like weights (rank ``r`` gets weight ``1/r**1.1``),
  so common methods are common and the long tail is long. Activity comes in bursts (a CLI session, a
  console page, a ``terraform plan``), not as independent events.
* Automation roles, 24/7: a CI deployer (Terraform bursts, busier in US working hours), an inventory
  collector (hourly Describe/List sweeps of every account and region), a backup runner (through a VPC
  endpoint from private 10.x addresses, KMS calls via ``AWS Internal``) and a cost reporter; their public
  IPs are EC2 addresses in us-east-1.
* AWS services: AWS Config's service-linked role, CloudTrail's bucket ACL checks and EC2 fetching
  instance-profile credentials, with the service hostname as ``sourceIPAddress``.
* One planted attack (by default on the last day): the long-term key of an IAM user is used from a country
  the organization has never seen, for about 20 minutes of reconnaissance. :meth:`Simulation.ground_truth`
  records it.
* Optionally (``SimulationConfig.scenarios``, ``travels``, ``new_hires``, ``crossovers``; all empty by
  default) more attack scenarios (:data:`SCENARIOS`) and benign episodes: trips abroad in the destination's
  office hours, a remote hire from a new country, a day of another team's work. :func:`eval_config` is the
  evaluation preset that uses them all (35 people, ~30,000 events per day). :data:`OPTIONAL_SCENARIOS` are
  planted only when asked for: a stolen key used through a VPC endpoint of the attacker's own account.

``ground_truth()["incidents"]`` describes every planted episode, attacks and benign ones alike (id, kind,
scenario, principals, keys, country, source IPs, first/last event, first delivery, methods, and whether the
country was new to the organization or to the principals). Everything but the intent is measured on the
generated records: each episode's records are tagged as they are emitted, and the novelty flags and the
first delivery come from a pass over all records and delivered files.

Every public IP the simulator can emit comes from a /24 inside a large, long-stable ISP or AWS allocation
(see :func:`emittable_ips`); the test suite checks each one against the DB-IP Lite country database.

The default configuration (21 days, 2 accounts, 2 regions, 12 humans, 3 automation roles) produces about
3,000-6,000 events per day on average (about 5,200 on a weekday, 2,200 on a weekend day). The same
configuration always produces byte-identical output: every random draw comes from ``random.Random``
instances seeded from ``(seed, actor)``, gzip headers carry ``mtime=0`` and no wall clock is read.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trailgeo_tools.geography import great_circle_km

try:  # isal is a project dependency and ~4x faster; stdlib gzip keeps the module importable without it
    from isal.igzip import compress as _isal_compress

    def _gzip(data: bytes) -> bytes:
        return bytes(_isal_compress(data, 2, mtime=0))

except ImportError:  # pragma: no cover - exercised only where isal is missing
    import gzip

    def _gzip(data: bytes) -> bytes:
        return gzip.compress(data, compresslevel=6, mtime=0)


__all__ = [
    "CROSSOVER_KINDS",
    "FOREIGN_ENDPOINT_SCENARIO",
    "OPTIONAL_SCENARIOS",
    "SCENARIOS",
    "AttackSpec",
    "AutomationRole",
    "CrossoverSpec",
    "Human",
    "NewHireSpec",
    "PlantedAttack",
    "SimulatedFile",
    "Simulation",
    "SimulationConfig",
    "TravelSpec",
    "emittable_ips",
    "eval_config",
    "incidents",
    "simulate",
    "write_ground_truth",
    "write_tree",
]

_HOUR = 3600
_DAY = 86400
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_KEYCHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_IDCHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_EVENT_VERSION = "1.08"

# ----------------------------------------------------------------------------------------------------------
# Address space. Each entry is a /24 ("a.b.c") inside a large allocation that has belonged to the same ISP
# (or to AWS EC2 us-east-1) for many years; hosts .1-.254 of each /24 may be emitted.
# ----------------------------------------------------------------------------------------------------------
_PUBLIC_PREFIXES: dict[str, tuple[str, ...]] = {
    # Comcast (73/8, 24.6/16, 68.80/12, 76.102/15, 98.207/16, 174.62/15), Verizon (71.183/16, 108.28/15,
    # 96.255/16), AT&T (99.43/16), Charter (72.229/16)
    "US": (
        "73.15.22",
        "73.162.90",
        "24.6.140",
        "71.183.45",
        "98.207.11",
        "108.28.77",
        "99.43.18",
        "76.102.55",
        "68.80.12",
        "72.229.18",
        "96.255.10",
        "174.62.30",
    ),
    # Deutsche Telekom (79.192/10, 87.128/10, 91.0/10, 93.192/10, 84.128/10, 217.80/12, 80.128/11)
    "DE": ("79.192.14", "87.128.42", "91.12.77", "93.192.5", "84.150.9", "217.80.12", "80.133.4"),
    # BSNL (117.192/10, 59.88/13), Reliance Jio (49.32/12, 157.32/12), Airtel (122.160/12, 223.187/16),
    # ACT Fibernet (106.51/16)
    "IN": ("117.200.33", "49.36.18", "122.161.40", "59.95.12", "106.51.77", "223.187.4", "157.32.9"),
    # BT (86.128/10, 81.128/12), Sky (90.192/11), BT (109.144/13)
    "GB": ("86.130.22", "81.129.60", "86.160.11", "90.196.8", "109.144.3"),
    # Vivo/Telefonica (177.32/12, 187.0/12, 189.96/13, 200.158/16, 201.20/16), Claro/NET (179.216/13)
    "BR": ("177.33.12", "189.100.20", "179.218.5", "187.10.4", "200.158.1", "201.20.3"),
    # Attack countries (never a human's home). VNPT (113.160/11, 14.160/11), Viettel (171.224/11, 27.72/13)
    "VN": ("113.161.72", "113.185.40", "14.160.33", "171.224.18", "27.72.99"),
    # RCS & RDS / Digi (86.120/14, 188.24/15, 5.2.128/17)
    "RO": ("86.120.5", "188.24.3", "5.2.130"),
    # More never-seen countries for the evaluation's attacks (incumbent or largest mobile/fixed operators):
    # MTN / Airtel Nigeria, Telkom Indonesia, Turk Telekom, KT, TRUE / TOT, PLDT / Globe, TE Data.
    "NG": ("105.112.5", "102.89.3", "197.210.5", "105.113.9"),
    "ID": ("36.72.5", "114.125.3", "110.136.12", "125.164.3", "36.80.9"),
    "TR": ("78.170.5", "88.230.3", "85.100.3", "78.180.12"),
    "KR": ("175.200.5", "121.130.3", "211.36.3", "175.210.9"),
    "TH": ("171.100.5", "58.10.3", "1.46.12", "171.96.5"),
    "PH": ("112.198.5", "49.145.3", "180.190.3", "49.146.9"),
    "EG": ("41.34.5", "156.200.3", "197.34.5", "41.40.9"),
    # Trip destinations (hotel and mobile networks): Orange / Free / SFR, Telefonica, SoftBank / NTT OCN,
    # Telstra, Rogers / Bell, Telecom Italia, KPN / Ziggo.
    "FR": ("90.12.5", "86.200.3", "2.6.77", "82.65.20", "109.9.30"),
    "ES": ("83.40.12", "88.12.34", "79.150.5", "80.30.10"),
    "JP": ("126.10.20", "126.200.5", "153.150.3", "60.40.12"),
    "AU": ("1.136.5", "58.165.9", "120.150.3", "124.168.7"),
    "CA": ("99.230.5", "70.26.12", "174.91.3", "99.240.3"),
    "IT": ("79.20.12", "87.10.33", "151.30.5", "79.40.5"),
    "NL": ("77.165.3", "84.26.10", "86.80.5", "77.170.5"),
    # Remote hires' home countries: Orange Polska / UPC, Telmex, Telkom SA / Vodacom, Telecom Argentina.
    "PL": ("83.20.5", "79.185.9", "89.70.12", "83.25.30"),
    "MX": ("187.140.5", "189.140.3", "201.141.7", "187.190.5"),
    "ZA": ("105.228.3", "41.13.12", "105.233.5", "41.113.5"),
    "AR": ("181.46.5", "190.16.5", "186.22.3", "181.47.9"),
}
# EC2 us-east-1 public ranges (3.80/12, 54.80/13, 54.210/15, 52.4/14, 34.192/12, 44.192/11, 18.208/13).
_EC2_US_EAST_1 = (
    "3.80.12",
    "3.85.201",
    "54.80.33",
    "54.210.77",
    "52.4.120",
    "34.192.10",
    "44.192.12",
    "18.208.4",
)
_HUMAN_COUNTRY_CYCLE = ("US", "US", "DE", "US", "IN", "US", "GB", "US", "BR", "US", "DE", "IN")
_ATTACK_COUNTRIES = ("VN", "RO", "NG", "ID", "TR", "KR", "TH", "PH", "EG")
_TRIP_COUNTRIES = ("FR", "ES", "JP", "AU", "CA", "IT", "NL")
_HIRE_COUNTRIES = ("PL", "MX", "ZA", "AR")
# Standard-time offsets in minutes (US: Eastern, Central, Pacific).
_UTC_OFFSETS: dict[str, tuple[int, ...]] = {
    "US": (-300, -360, -480),
    "DE": (60,),
    "IN": (330,),
    "GB": (0,),
    "BR": (-180,),
    "FR": (60,),
    "ES": (60,),
    "JP": (540,),
    "AU": (600,),
    "CA": (-300, -480),
    "IT": (60,),
    "NL": (60,),
    "PL": (60,),
    "MX": (-360,),
    "ZA": (120,),
    "AR": (-180,),
}

# Where the people of the simulations live and travel: a big city of each country (latitude,
# longitude), for how long a journey between two takes. A flight covers about 800 km an hour gate to
# gate, and getting to the airport, through it and out of the other one about three hours more:
# nobody works from Tokyo an hour after their last call from Frankfurt.
_CITIES: dict[str, tuple[float, float]] = {
    "US": (41.88, -87.63),  # Chicago
    "DE": (50.11, 8.68),  # Frankfurt
    "IN": (12.97, 77.59),  # Bengaluru
    "GB": (51.51, -0.13),  # London
    "BR": (-23.55, -46.63),  # Sao Paulo
    "FR": (48.86, 2.35),  # Paris
    "ES": (40.42, -3.70),  # Madrid
    "JP": (35.68, 139.69),  # Tokyo
    "AU": (-33.87, 151.21),  # Sydney
    "CA": (43.65, -79.38),  # Toronto
    "IT": (41.90, 12.50),  # Rome
    "NL": (52.37, 4.90),  # Amsterdam
    "PL": (52.23, 21.01),  # Warsaw
    "MX": (19.43, -99.13),  # Mexico City
    "ZA": (-26.20, 28.05),  # Johannesburg
    "AR": (-34.60, -58.38),  # Buenos Aires
    "PT": (38.72, -9.14),  # Lisbon
    "IE": (53.35, -6.26),  # Dublin
    "PH": (14.60, 120.98),  # Manila
    "EG": (30.04, 31.24),  # Cairo
}
_FLIGHT_KMH = 800.0
_AIRPORTS_S = 3 * 3600


def journey_seconds(origin: str, destination: str) -> int:
    """How long a person needs to get from ``origin`` to ``destination`` (countries of ``_CITIES``):
    nothing within a country, else the flight between their cities and the airports at both ends."""
    if origin == destination:
        return 0
    km = great_circle_km(_CITIES[origin], _CITIES[destination])
    return _AIRPORTS_S + int(km / _FLIGHT_KMH * 3600)


def emittable_ips() -> dict[str, tuple[str, ...]]:
    """Every public IP the simulator can emit, by the country a GeoIP database must return for it.

    AWS EC2 addresses used by automation are listed under ``"US"`` (us-east-1). Private VPC addresses,
    ``AWS Internal`` and service hostnames are not IPs a GeoIP database can resolve and are not listed.
    """
    out: dict[str, tuple[str, ...]] = {}
    for country, prefixes in _PUBLIC_PREFIXES.items():
        extra = _EC2_US_EAST_1 if country == "US" else ()
        out[country] = tuple(f"{p}.{h}" for p in (*prefixes, *extra) for h in range(1, 255))
    return out


# ----------------------------------------------------------------------------------------------------------
# Method catalogue: (service, eventName, readOnly, parameter kind). Within a profile, order = popularity.
# ----------------------------------------------------------------------------------------------------------
_Method = tuple[str, str, bool, str]

_PROFILES: dict[str, tuple[_Method, ...]] = {
    "platform": (
        ("ec2", "DescribeInstances", True, "ec2_instances"),
        ("sts", "GetCallerIdentity", True, ""),
        ("s3", "ListBuckets", True, "s3_host"),
        ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
        ("cloudformation", "DescribeStacks", True, "stack_opt"),
        ("iam", "GetRole", True, "role"),
        ("ec2", "DescribeVpcs", True, "ec2_filter"),
        ("logs", "DescribeLogGroups", True, ""),
        ("iam", "ListRoles", True, ""),
        ("ec2", "DescribeSubnets", True, "ec2_filter"),
        ("s3", "GetBucketPolicy", True, "bucket_policy"),
        ("lambda", "ListFunctions20150331", True, ""),
        ("iam", "ListAttachedRolePolicies", True, "role"),
        ("cloudformation", "DescribeStackEvents", True, "stack"),
        ("ec2", "DescribeRegions", True, "ec2_regions"),
        ("ec2", "DescribeVolumes", True, "ec2_filter"),
        ("kms", "ListKeys", True, ""),
        ("iam", "ListUsers", True, ""),
        ("s3", "GetBucketLocation", True, "bucket_location"),
        ("ec2", "CreateTags", False, "ec2_tags"),
        ("cloudformation", "UpdateStack", False, "stack"),
        ("ec2", "StopInstances", False, "ec2_instance"),
        ("ec2", "StartInstances", False, "ec2_instance"),
        ("iam", "GetPolicyVersion", True, "policy"),
        ("secretsmanager", "ListSecrets", True, ""),
        ("iam", "PutRolePolicy", False, "role_policy"),
        ("ssm", "DescribeInstanceInformation", True, ""),
        ("s3", "PutBucketTagging", False, "bucket_tagging"),
        ("ec2", "RunInstances", False, "ec2_run"),
        ("iam", "AttachRolePolicy", False, "role_policy_arn"),
    ),
    "developer": (
        ("logs", "FilterLogEvents", True, "log_group"),
        ("lambda", "GetFunction20150331v2", True, "function"),
        ("sts", "GetCallerIdentity", True, ""),
        ("logs", "DescribeLogGroups", True, ""),
        ("lambda", "ListFunctions20150331", True, ""),
        ("cloudformation", "DescribeStacks", True, "stack_opt"),
        ("logs", "DescribeLogStreams", True, "log_group"),
        ("dynamodb", "DescribeTable", True, "table"),
        ("s3", "ListBuckets", True, "s3_host"),
        ("ssm", "GetParameter", True, "parameter"),
        ("ecr", "GetAuthorizationToken", True, ""),
        ("ecr", "DescribeRepositories", True, ""),
        ("cloudformation", "DescribeStackEvents", True, "stack"),
        ("ec2", "DescribeInstances", True, "ec2_instances"),
        ("dynamodb", "ListTables", True, ""),
        ("lambda", "UpdateFunctionCode20150331v2", False, "function_code"),
        ("secretsmanager", "GetSecretValue", True, "secret"),
        ("sqs", "ListQueues", True, ""),
        ("cloudformation", "UpdateStack", False, "stack"),
        ("logs", "PutRetentionPolicy", False, "log_retention"),
        ("ssm", "PutParameter", False, "parameter_put"),
        ("lambda", "UpdateFunctionConfiguration20150331v2", False, "function"),
        ("iam", "GetRole", True, "role"),
        ("kms", "Decrypt", True, "kms_decrypt"),
    ),
    "data": (
        ("athena", "GetQueryExecution", True, "athena_query"),
        ("athena", "StartQueryExecution", False, "athena_start"),
        ("glue", "GetTables", True, "glue_db"),
        ("glue", "GetDatabases", True, ""),
        ("s3", "ListBuckets", True, "s3_host"),
        ("athena", "GetQueryResults", True, "athena_query"),
        ("glue", "GetTable", True, "glue_table"),
        ("sts", "GetCallerIdentity", True, ""),
        ("s3", "GetBucketLocation", True, "bucket_location"),
        ("athena", "ListWorkGroups", True, ""),
        ("dynamodb", "DescribeTable", True, "table"),
        ("glue", "GetPartitions", True, "glue_table"),
        ("glue", "StartJobRun", False, "glue_job"),
        ("logs", "DescribeLogGroups", True, ""),
        ("kms", "DescribeKey", True, "kms_key"),
        ("s3", "GetBucketPolicy", True, "bucket_policy"),
    ),
    "security": (
        ("iam", "ListUsers", True, ""),
        ("iam", "GetAccountAuthorizationDetails", True, ""),
        ("guardduty", "ListFindings", True, "detector"),
        ("securityhub", "GetFindings", True, ""),
        ("iam", "ListAttachedUserPolicies", True, "user"),
        ("cloudtrail", "LookupEvents", True, ""),
        ("iam", "GetRole", True, "role"),
        ("sts", "GetCallerIdentity", True, ""),
        ("config", "DescribeComplianceByConfigRule", True, ""),
        ("iam", "ListAccessKeys", True, "user"),
        ("kms", "ListKeys", True, ""),
        ("s3", "GetBucketPolicy", True, "bucket_policy"),
        ("guardduty", "GetFindings", True, "detector"),
        ("cloudtrail", "DescribeTrails", True, ""),
        ("kms", "GetKeyPolicy", True, "kms_key"),
        ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
        ("s3", "GetBucketPublicAccessBlock", True, "bucket_pab"),
        ("organizations", "ListAccounts", True, ""),
        ("iam", "GenerateCredentialReport", False, ""),
        ("iam", "GetCredentialReport", True, ""),
        ("securityhub", "BatchUpdateFindings", False, ""),
        ("ec2", "DescribeInstances", True, "ec2_instances"),
    ),
}
_PROFILE_CYCLE = ("platform", "developer", "platform", "data", "developer", "security")
_SSO_PERMISSION_SETS = {
    "platform": "AdministratorAccess",
    "developer": "PowerUserAccess",
    "data": "DataScientist",
    "security": "SecurityAudit",
}
# Human tool mix per profile: cli, console, boto3, terraform.
_TOOL_MIX: dict[str, tuple[float, float, float, float]] = {
    "platform": (0.40, 0.25, 0.10, 0.25),
    "developer": (0.35, 0.35, 0.20, 0.10),
    "data": (0.20, 0.40, 0.40, 0.0),
    "security": (0.30, 0.50, 0.20, 0.0),
}
_TOOLS = ("cli", "console", "boto3", "terraform")
_TERRAFORM_READS: tuple[_Method, ...] = (
    ("sts", "GetCallerIdentity", True, ""),
    ("ec2", "DescribeVpcs", True, "ec2_filter"),
    ("ec2", "DescribeSubnets", True, "ec2_filter"),
    ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
    ("ec2", "DescribeInstances", True, "ec2_instances"),
    ("ec2", "DescribeInstanceAttribute", True, "ec2_instance"),
    ("ec2", "DescribeVolumes", True, "ec2_filter"),
    ("iam", "GetRole", True, "role"),
    ("iam", "ListAttachedRolePolicies", True, "role"),
    ("iam", "ListRolePolicies", True, "role"),
    ("iam", "GetPolicy", True, "policy"),
    ("iam", "GetPolicyVersion", True, "policy"),
    ("s3", "GetBucketPolicy", True, "bucket_policy"),
    ("s3", "GetBucketAcl", True, "bucket_acl"),
    ("s3", "GetBucketTagging", True, "bucket_tagging"),
    ("s3", "GetBucketVersioning", True, "bucket_versioning"),
    ("s3", "GetBucketEncryption", True, "bucket_encryption"),
    ("lambda", "GetFunction20150331v2", True, "function"),
    ("lambda", "GetPolicy20150331v2", True, "function"),
    ("logs", "DescribeLogGroups", True, ""),
    ("kms", "DescribeKey", True, "kms_key"),
    ("dynamodb", "DescribeTable", True, "table"),
)
_TERRAFORM_WRITES: tuple[_Method, ...] = (
    ("ec2", "CreateTags", False, "ec2_tags"),
    ("ec2", "AuthorizeSecurityGroupIngress", False, "ec2_sg"),
    ("iam", "PutRolePolicy", False, "role_policy"),
    ("lambda", "UpdateFunctionCode20150331v2", False, "function_code"),
    ("lambda", "UpdateFunctionConfiguration20150331v2", False, "function"),
    ("s3", "PutBucketTagging", False, "bucket_tagging"),
    ("logs", "PutRetentionPolicy", False, "log_retention"),
    ("ec2", "RunInstances", False, "ec2_run"),
)
_INVENTORY_SWEEP: tuple[_Method, ...] = (
    ("ec2", "DescribeInstances", True, "ec2_instances"),
    ("ec2", "DescribeVolumes", True, "ec2_filter"),
    ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
    ("ec2", "DescribeVpcs", True, "ec2_filter"),
    ("lambda", "ListFunctions20150331", True, ""),
    ("dynamodb", "ListTables", True, ""),
    ("rds", "DescribeDBInstances", True, ""),
    ("elasticloadbalancing", "DescribeLoadBalancers", True, ""),
)
_INVENTORY_GLOBAL: tuple[_Method, ...] = (
    ("s3", "ListBuckets", True, "s3_host"),
    ("iam", "ListRoles", True, ""),
    ("iam", "ListUsers", True, ""),
)
_CONFIG_CALLS: tuple[_Method, ...] = (
    ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
    ("ec2", "DescribeNetworkInterfaces", True, "ec2_filter"),
    ("ec2", "DescribeInstances", True, "ec2_instances"),
    ("ec2", "DescribeVolumes", True, "ec2_filter"),
    ("ec2", "DescribeRouteTables", True, "ec2_filter"),
    ("s3", "GetBucketAcl", True, "bucket_acl"),
    ("s3", "GetBucketVersioning", True, "bucket_versioning"),
    ("lambda", "GetFunction20150331v2", True, "function"),
    ("iam", "GetRole", True, "role"),
)
# A deploy as the CI runs it also refreshes what only automation reads (load balancers, databases).
_DEPLOY_EXTRA_READS: tuple[_Method, ...] = (
    ("rds", "DescribeDBInstances", True, ""),
    ("elasticloadbalancing", "DescribeLoadBalancers", True, ""),
)
# Attack recon plan: (service, eventName, readOnly, parameter kind, per-region?, error code or "").
_ATTACK_PLAN: tuple[tuple[str, str, bool, str, bool, str], ...] = (
    ("sts", "GetCallerIdentity", True, "", False, ""),
    ("iam", "ListUsers", True, "", False, ""),
    ("iam", "ListAttachedUserPolicies", True, "victim", False, ""),
    ("iam", "ListAttachedUserPolicies", True, "user", False, ""),
    ("s3", "ListBuckets", True, "s3_host", False, ""),
    ("ec2", "DescribeRegions", True, "ec2_regions", False, ""),
    ("ec2", "DescribeInstances", True, "ec2_filter", True, ""),
    ("secretsmanager", "ListSecrets", True, "", True, "AccessDenied"),
)
_ATTACK_USER_AGENTS = (
    "aws-cli/1.18.69 Python/2.7.18 Linux/6.5.0-kali3-amd64 botocore/1.16.19",
    (
        "Boto3/1.28.64 md/Botocore#1.31.64 ua/2.0 os/linux#6.5.0-kali3-amd64 md/arch#x86_64 "
        "lang/python#3.11.6 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.31.64"
    ),
)
_GLOBAL_SERVICES = frozenset({"iam", "signin", "organizations", "cloudfront", "route53"})
_GLOBAL_OPS = frozenset({("s3", "ListBuckets"), ("ce", "GetCostAndUsage"), ("ce", "GetCostForecast")})
_NAMES = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
    "ivan",
    "judy",
    "ken",
    "laura",
    "mike",
    "nina",
    "oscar",
    "priya",
    "quinn",
    "rafael",
    "sara",
    "tomas",
    "uma",
    "victor",
    "wendy",
    "yusuf",
)
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36"
_BROWSERS = (
    f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) {_WEBKIT}",
    f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) {_WEBKIT} Edg/122.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
    f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT}",
)
_CLI_BUILDS = (
    ("2.15.30", "3.11.8", "Linux/6.5.0-1014-aws exe/x86_64.ubuntu.22"),
    ("2.15.17", "3.11.6", "Darwin/23.3.0 exe/x86_64"),
    ("2.13.25", "3.11.6", "Windows/10 exe/AMD64"),
    ("2.15.30", "3.11.8", "Darwin/23.4.0 exe/arm64"),
    ("2.11.20", "3.11.3", "Linux/6.5.0-21-generic exe/x86_64.ubuntu.22"),
)
_BOTO_BUILDS = (
    ("1.34.60", "os/linux#6.5.0-1014-aws md/arch#x86_64 lang/python#3.11.8"),
    ("1.34.44", "os/macos#23.3.0 md/arch#arm64 lang/python#3.11.7"),
    ("1.33.13", "os/windows#10 md/arch#amd64 lang/python#3.11.5"),
)
_TF_BUILDS = (("1.7.4", "5.40.0"), ("1.6.6", "5.31.0"), ("1.7.5", "5.42.0"))


def _terraform_ua(tf: str, provider: str, svc: str) -> str:
    return (
        f"APN/1.0 HashiCorp/1.0 Terraform/{tf} (+https://www.terraform.io) terraform-provider-aws/{provider} "
        "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.25.2 os/linux "
        f"lang/go#1.21.8 md/GOOS#linux md/GOARCH#amd64 api/{svc}#1.{len(svc) * 7 % 40 + 10}.2"
    )


def _boto_ua(build: tuple[str, str], retry: str = "standard") -> str:
    ver, plat = build
    core = "1." + ver.split(".", 1)[1]
    tail = f"md/pyimpl#CPython cfg/retry-mode#{retry} Botocore/{core}"
    return f"Boto3/{ver} md/Botocore#{core} ua/2.0 {plat} {tail}"


_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_API_VERSION = re.compile(r"\d{8}(v\d+)?$")


def _action(name: str) -> str:
    """IAM action name of an eventName (``ListFunctions20150331`` -> ``ListFunctions``)."""
    return _API_VERSION.sub("", name)


def _cli_command(svc: str, name: str) -> str:
    if (svc, name) == ("s3", "ListBuckets"):
        return "s3.ls"
    cli_svc = {"elasticloadbalancing": "elbv2"}.get(svc, svc)
    return f"{cli_svc}.{_CAMEL.sub('-', _action(name)).lower()}"


# ----------------------------------------------------------------------------------------------------------
# Public data types
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SimulatedFile:
    """One S3 object of the trail bucket."""

    key: str
    delivered_at: datetime  # UTC; the timestamp in the file name (log files: minute precision)
    body: bytes  # gzip-compressed JSON

    @property
    def is_digest(self) -> bool:
        return "/CloudTrail-Digest/" in self.key


@dataclass(frozen=True, slots=True)
class PlantedAttack:
    """Ground truth of one planted attack."""

    name: str
    principal_arn: str
    access_key_id: str
    country: str
    source_ips: tuple[str, ...]
    first_event: datetime
    last_event: datetime
    methods: tuple[str, ...]  # "eventSource:eventName", in order of first use
    account_id: str
    event_ids: tuple[str, ...] = ()
    user_agents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Human:
    """A simulated person. ``arns`` are every principal ARN the person acts as."""

    name: str
    email: str
    kind: str  # "sso" (IAM Identity Center assumed role) or "iam_user"
    profile: str  # "platform" | "developer" | "data" | "security"
    country: str
    utc_offset_minutes: int
    ips: tuple[str, ...]
    home_account: str
    home_region: str
    access_key_id: str | None  # long-term AKIA key of an IAM user
    arns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AutomationRole:
    """A 24/7 machine principal (an IAM role assumed by EC2 instances or CI jobs)."""

    name: str
    kind: str  # "ci" | "inventory" | "backup" | "cost"
    accounts: tuple[str, ...]
    ips: tuple[str, ...]  # EC2 public IPs in us-east-1, or private VPC addresses
    vpc_endpoint_id: str | None
    arns: tuple[str, ...]


SCENARIOS = (
    "stolen-key-recon-new-country",
    "hijacked-admin-persistence",
    "low-and-slow",
    "burst",
    "attacker-in-travel-country",
    "attacker-in-org-country-new-to-principal",
)
# Planted only when a configuration asks for it (``SimulationConfig.scenarios``); the evaluation preset
# plants :data:`SCENARIOS`. The stolen key is used from the attacker's own AWS account through an interface
# VPC endpoint in their VPC (the "sneaky endpoints" technique): private source addresses, nothing to
# geolocate. Its ``AttackSpec.country`` is the location the detector scores it from, ``VPCE:<account>``.
FOREIGN_ENDPOINT_SCENARIO = "stolen-key-via-foreign-vpc-endpoint"
OPTIONAL_SCENARIOS = (FOREIGN_ENDPOINT_SCENARIO,)
_ENDPOINT_LOCATION = re.compile(r"VPCE:(\d{12})")
_SSO_SCENARIOS = frozenset({"hijacked-admin-persistence"})  # the others steal an IAM user's AKIA key
CROSSOVER_KINDS = ("terraform-deploy", "data-analysis")


@dataclass(frozen=True, slots=True)
class AttackSpec:
    """One planted attack scenario (see :data:`SCENARIOS` and :data:`OPTIONAL_SCENARIOS`). ``day`` is 0-based;
    ``victim`` a human index; ``country`` where the attacker calls from, for the foreign endpoint scenario the
    location ``VPCE:<the attacker's account>``."""

    scenario: str
    day: int
    victim: int
    country: str
    follow_up_days: int = 4  # low-and-slow: days from the probe to the exfiltration

    def as_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "day": self.day,
            "victim": self.victim,
            "country": self.country,
            "follow_up_days": self.follow_up_days,
        }


@dataclass(frozen=True, slots=True)
class TravelSpec:
    """Human ``human`` works from ``country`` (its office hours and ISPs) on days ``start_day`` .. +days-1."""

    human: int
    country: str
    start_day: int
    days: int

    def as_json(self) -> dict[str, Any]:
        return {"human": self.human, "country": self.country, "start_day": self.start_day, "days": self.days}


@dataclass(frozen=True, slots=True)
class NewHireSpec:
    """A remote employee (an SSO user) who works from ``country`` from ``start_day`` on."""

    country: str
    start_day: int
    profile: str = "developer"

    def as_json(self) -> dict[str, Any]:
        return {"country": self.country, "start_day": self.start_day, "profile": self.profile}


@dataclass(frozen=True, slots=True)
class CrossoverSpec:
    """Human ``human`` spends day ``day`` at home on another team's work (see :data:`CROSSOVER_KINDS`)."""

    human: int
    day: int
    kind: str = "terraform-deploy"

    def as_json(self) -> dict[str, Any]:
        return {"human": self.human, "day": self.day, "kind": self.kind}


def _human_country(index: int) -> str:
    return _HUMAN_COUNTRY_CYCLE[index % len(_HUMAN_COUNTRY_CYCLE)]


def _human_profile(index: int) -> str:
    return _PROFILE_CYCLE[index % len(_PROFILE_CYCLE)]


def _is_iam_user(index: int, humans: int) -> bool:
    return index % 6 == 1 or humans == 1


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """Parameters of a simulated organization. ``start`` must be a UTC midnight."""

    start: datetime
    days: int = 21
    seed: int = 7
    org_id: str | None = "o-a1b2c3d4e5"  # None -> single-account layout AWSLogs/<acct>/CloudTrail/...
    accounts: tuple[str, ...] = ("111122223333", "444455556666")
    regions: tuple[str, ...] = ("us-east-1", "eu-west-1")
    humans: int = 12
    automation_roles: int = 3
    attack_day: int | None = None  # 0-based day of the attack; None -> the last day
    attack: bool = True
    attack_country: str = "VN"
    file_minutes: int = 15  # one log file per account/region per slot that has events
    events_per_human_hour: float = 25.0  # mean over humans, during their working hours
    digests: bool = True
    bucket: str = "aws-cloudtrail-logs-o-a1b2c3d4e5"
    trail_name: str = "org-trail"
    email_domain: str = "example.com"
    scenarios: tuple[AttackSpec, ...] = ()  # planted attacks besides the classic ``attack``
    travels: tuple[TravelSpec, ...] = ()
    new_hires: tuple[NewHireSpec, ...] = ()
    crossovers: tuple[CrossoverSpec, ...] = ()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != UTC.utcoffset(None):
            raise ValueError("start must be timezone-aware UTC")
        if (self.start.hour, self.start.minute, self.start.second, self.start.microsecond) != (0, 0, 0, 0):
            raise ValueError("start must be 00:00:00 UTC")
        if self.days < 1 or not self.accounts or not self.regions:
            raise ValueError("need at least one day, one account and one region")
        if any(not re.fullmatch(r"\d{12}", a) for a in self.accounts) or len(set(self.accounts)) != len(
            self.accounts
        ):
            raise ValueError("accounts must be distinct 12-digit account ids")
        if not 1 <= self.file_minutes <= 60 or 1440 % self.file_minutes:
            raise ValueError("file_minutes must divide a day and be at most 60")
        if self.humans < 0 or self.automation_roles < 0 or self.events_per_human_hour < 0:
            raise ValueError("humans, automation_roles and events_per_human_hour must be >= 0")
        if self.attack:
            if self.humans < 1:
                raise ValueError("the attack steals an IAM user's key: need at least one human")
            if not 0 <= self.effective_attack_day < self.days:
                raise ValueError("attack_day outside the simulated days")
            if self.attack_country not in _ATTACK_COUNTRIES:
                raise ValueError(f"attack_country must be one of {_ATTACK_COUNTRIES} (never a human's home)")
        self._check_episodes()

    def _check_episodes(self) -> None:
        def day_ok(day: int) -> bool:
            return 0 <= day < self.days

        for a in self.scenarios:
            self._check_scenario(a, day_ok)
        for t in self.travels:
            if (
                not 0 <= t.human < self.humans
                or t.days < 1
                or not (day_ok(t.start_day) and day_ok(t.start_day + t.days - 1))
            ):
                raise ValueError(f"travel {t} outside the simulated humans or days")
            if t.country not in _UTC_OFFSETS or t.country == _human_country(t.human):
                raise ValueError(f"travel country {t.country} must be known and not the traveller's home")
        for h in self.new_hires:
            if not day_ok(h.start_day) or h.country not in _UTC_OFFSETS or h.profile not in _PROFILES:
                raise ValueError(f"new hire {h} has an unknown country or profile or starts outside the days")
        for c in self.crossovers:
            if not 0 <= c.human < self.humans or not day_ok(c.day) or c.kind not in CROSSOVER_KINDS:
                raise ValueError(
                    f"crossover {c} has an unknown kind or is outside the simulated humans or days"
                )

    def _check_scenario(self, a: AttackSpec, day_ok: Callable[[int], bool]) -> None:
        if a.scenario not in SCENARIOS + OPTIONAL_SCENARIOS:
            raise ValueError(f"unknown scenario {a.scenario!r}; known: {SCENARIOS + OPTIONAL_SCENARIOS}")
        last = a.day + (a.follow_up_days if a.scenario == "low-and-slow" else 0)
        if not (day_ok(a.day) and day_ok(last)):
            raise ValueError(f"scenario {a.scenario} day outside the simulated days")
        if not 0 <= a.victim < self.humans:
            raise ValueError(f"scenario {a.scenario} victim {a.victim} is not a human index")
        want_iam = a.scenario not in _SSO_SCENARIOS
        if _is_iam_user(a.victim, self.humans) != want_iam:
            kind = "an IAM user" if want_iam else "an SSO user"
            raise ValueError(f"scenario {a.scenario} needs {kind} as victim (human {a.victim})")
        if a.scenario == FOREIGN_ENDPOINT_SCENARIO:
            owner = _ENDPOINT_LOCATION.fullmatch(a.country)
            if owner is None or owner.group(1) in self.accounts:
                raise ValueError(
                    f"scenario {a.scenario}: country must be VPCE:<12-digit account outside the "
                    f"organization>, not {a.country!r}"
                )
        elif a.country not in _PUBLIC_PREFIXES:
            raise ValueError(f"scenario {a.scenario}: no IP prefixes for country {a.country}")

    @property
    def effective_attack_day(self) -> int:
        return self.days - 1 if self.attack_day is None else self.attack_day

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(int(self.start.timestamp()) + self.days * _DAY, tz=UTC)

    def as_json(self) -> dict[str, Any]:
        return {
            "start": _iso(int(self.start.timestamp())),
            "days": self.days,
            "seed": self.seed,
            "org_id": self.org_id,
            "accounts": list(self.accounts),
            "regions": list(self.regions),
            "humans": self.humans,
            "automation_roles": self.automation_roles,
            "attack": self.attack,
            "attack_day": self.effective_attack_day if self.attack else None,
            "attack_country": self.attack_country if self.attack else None,
            "file_minutes": self.file_minutes,
            "events_per_human_hour": self.events_per_human_hour,
            "digests": self.digests,
            "bucket": self.bucket,
            "trail_name": self.trail_name,
        } | {
            name: [spec.as_json() for spec in specs]
            for name, specs in (
                ("scenarios", self.scenarios),
                ("travels", self.travels),
                ("new_hires", self.new_hires),
                ("crossovers", self.crossovers),
            )
            if specs
        }


@dataclass(frozen=True, slots=True)
class Simulation:
    """The simulated bucket content and what was planted in it."""

    config: SimulationConfig
    files: list[SimulatedFile]  # sorted by delivered_at, then key
    attacks: list[PlantedAttack]
    events_count: int
    humans: tuple[Human, ...]
    automation: tuple[AutomationRole, ...]
    incidents: tuple[dict[str, Any], ...] = ()  # the contract of "incidents" in the ground truth

    @property
    def log_files(self) -> list[SimulatedFile]:
        return [f for f in self.files if not f.is_digest]

    @property
    def digest_files(self) -> list[SimulatedFile]:
        return [f for f in self.files if f.is_digest]

    def records(self) -> Iterator[tuple[SimulatedFile, dict[str, Any]]]:
        """Decompress every log file (digests skipped) and yield ``(file, record)``."""
        import gzip

        for f in self.files:
            if not f.is_digest:
                for rec in json.loads(gzip.decompress(f.body))["Records"]:
                    yield f, rec

    def ground_truth(self) -> dict[str, Any]:
        cfg = self.config
        logs = self.log_files
        benign = sorted(
            {h.country for h in self.humans}
            | ({"US"} if self.automation else set())
            | {t.country for t in cfg.travels}
        )
        return {
            "generator": "trailgeo_tools.simulate",
            "config": cfg.as_json(),
            "window": {"start": _iso(int(cfg.start.timestamp())), "end": _iso(int(cfg.end.timestamp()))},
            "events_count": self.events_count,
            "events_per_day": round(self.events_count / cfg.days, 1),
            "log_files": len(logs),
            "digest_files": len(self.files) - len(logs),
            "benign_countries": benign,
            "attacks": [
                {
                    "name": a.name,
                    "principal_arn": a.principal_arn,
                    "access_key_id": a.access_key_id,
                    "account_id": a.account_id,
                    "country": a.country,
                    "source_ips": list(a.source_ips),
                    "first_event": _iso(int(a.first_event.timestamp())),
                    "last_event": _iso(int(a.last_event.timestamp())),
                    "methods": list(a.methods),
                    "user_agents": list(a.user_agents),
                    "event_ids": list(a.event_ids),
                }
                for a in self.attacks
            ],
            "humans": [
                {
                    "name": h.name,
                    "kind": h.kind,
                    "profile": h.profile,
                    "country": h.country,
                    "utc_offset_minutes": h.utc_offset_minutes,
                    "ips": list(h.ips),
                    "home_account": h.home_account,
                    "access_key_id": h.access_key_id,
                    "arns": list(h.arns),
                }
                for h in self.humans
            ],
            "automation": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "accounts": list(r.accounts),
                    "ips": list(r.ips),
                    "vpc_endpoint_id": r.vpc_endpoint_id,
                    "arns": list(r.arns),
                }
                for r in self.automation
            ],
            "incidents": incidents(self),
        }


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------
def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _uuid(rng: random.Random) -> str:
    n = rng.getrandbits(128)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[n & 3]}{h[17:20]}-{h[20:]}"


def _rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def _zipf_cum(n: int, s: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1.0 / (r**s) for r in range(1, n + 1)))


@dataclass(slots=True)
class _Res:
    """Named resources of one account, referenced by requestParameters."""

    account: str
    buckets: list[str]
    roles: list[str]
    users: list[str]
    stacks: list[str]
    functions: list[str]
    log_groups: list[str]
    instances: list[str]
    secrets: list[str]
    tables: list[str]
    keys: list[str]
    parameters: list[str]
    policies: list[str]
    security_groups: list[str]


def _resources(rng: random.Random, account: str, users: list[str]) -> _Res:
    apps = rng.sample(["billing", "orders", "catalog", "auth", "search", "reports", "ingest", "notify"], 5)
    functions = [f"{a}-{s}" for a in apps[:4] for s in ("api", "worker")][: rng.randint(5, 8)]
    return _Res(
        account=account,
        buckets=[f"{a}-{account}-{rng.choice(['data', 'assets', 'artifacts'])}" for a in apps]
        + [f"terraform-state-{account}"],
        roles=[f"{a}-lambda-role" for a in apps[:3]] + ["ci-deployer", "inventory-collector", "OrgAdmin"],
        users=[*users, "svc-legacy-backup", "svc-monitoring"],
        stacks=[f"{a}-{rng.choice(['prod', 'staging'])}" for a in apps[:4]],
        functions=functions,
        log_groups=[f"/aws/lambda/{f}" for f in functions]
        + ["/ecs/orders", "/aws/rds/cluster/main/postgresql"],
        instances=[f"i-0{_hex(rng, 16)}" for _ in range(rng.randint(6, 12))],
        secrets=[f"prod/{a}/db" for a in apps[:3]],
        tables=[f"{a}-table" for a in apps[:3]],
        keys=[_uuid(rng) for _ in range(3)],
        parameters=[f"/{a}/prod/config" for a in apps[:4]],
        policies=[f"{a}-access" for a in apps[:3]],
        security_groups=[f"sg-0{_hex(rng, 16)}" for _ in range(5)],
    )


def _bucket_params(r: random.Random, s: _Res, region: str, sub: str) -> dict[str, Any]:
    b = r.choice(s.buckets)
    return {"bucketName": b, "Host": f"{b}.s3.{region}.amazonaws.com", sub: ""}


def _instances(ids: Sequence[str]) -> dict[str, Any]:
    return {"instancesSet": {"items": [{"instanceId": i} for i in ids]}}


_ParamFn = Callable[[random.Random, _Res, str], dict[str, Any] | None]
_PARAMS: dict[str, _ParamFn] = {
    "": lambda _r, _s, _g: None,
    "s3_host": lambda _r, _s, _g: {"Host": "s3.amazonaws.com"},
    "bucket_policy": lambda r, s, g: _bucket_params(r, s, g, "policy"),
    "bucket_location": lambda r, s, g: _bucket_params(r, s, g, "location"),
    "bucket_acl": lambda r, s, g: _bucket_params(r, s, g, "acl"),
    "bucket_tagging": lambda r, s, g: _bucket_params(r, s, g, "tagging"),
    "bucket_versioning": lambda r, s, g: _bucket_params(r, s, g, "versioning"),
    "bucket_encryption": lambda r, s, g: _bucket_params(r, s, g, "encryption"),
    "bucket_pab": lambda r, s, g: _bucket_params(r, s, g, "publicAccessBlock"),
    "ec2_filter": lambda _r, _s, _g: {"filterSet": {}},
    "ec2_regions": lambda r, _s, _g: {"regionSet": {}, "allRegions": r.random() < 0.3},
    "ec2_instances": lambda r, s, _g: (
        {"instancesSet": {}, "filterSet": {}} if r.random() < 0.7 else _instances([r.choice(s.instances)])
    ),
    "ec2_instance": lambda r, s, _g: _instances([r.choice(s.instances)]),
    "ec2_tags": lambda r, s, _g: {
        "resourcesSet": {"items": [{"resourceId": r.choice(s.instances)}]},
        "tagSet": {
            "items": [{"key": r.choice(["owner", "env", "cost-center"]), "value": r.choice(s.stacks)}]
        },
    },
    "ec2_sg": lambda r, s, _g: {"groupId": r.choice(s.security_groups), "ipPermissions": {"items": []}},
    "ec2_run": lambda r, _s, _g: {
        "instancesSet": {"items": [{"imageId": f"ami-0{_hex(r, 16)}", "minCount": 1, "maxCount": 1}]},
        "instanceType": r.choice(["t3.micro", "t3.medium", "m6i.large"]),
        "subnetId": f"subnet-0{_hex(r, 16)}",
    },
    "role": lambda r, s, _g: {"roleName": r.choice(s.roles)},
    "role_policy": lambda r, s, _g: {"roleName": r.choice(s.roles), "policyName": r.choice(s.policies)},
    "role_policy_arn": lambda r, s, _g: {
        "roleName": r.choice(s.roles),
        "policyArn": f"arn:aws:iam::{s.account}:policy/{r.choice(s.policies)}",
    },
    "policy": lambda r, s, _g: {"policyArn": f"arn:aws:iam::{s.account}:policy/{r.choice(s.policies)}"},
    "user": lambda r, s, _g: {"userName": r.choice(s.users)},
    "stack": lambda r, s, _g: {"stackName": r.choice(s.stacks)},
    "stack_opt": lambda r, s, _g: {"stackName": r.choice(s.stacks)} if r.random() < 0.5 else None,
    "function": lambda r, s, _g: {"functionName": r.choice(s.functions)},
    "function_code": lambda r, s, _g: {
        "functionName": r.choice(s.functions),
        "publish": False,
        "dryRun": False,
    },
    "log_group": lambda r, s, _g: {"logGroupName": r.choice(s.log_groups)},
    "log_retention": lambda r, s, _g: {"logGroupName": r.choice(s.log_groups), "retentionInDays": 30},
    "table": lambda r, s, _g: {"tableName": r.choice(s.tables)},
    "secret": lambda r, s, _g: {"secretId": r.choice(s.secrets)},
    "parameter": lambda r, s, _g: {"name": r.choice(s.parameters), "withDecryption": True},
    "parameter_put": lambda r, s, _g: {"name": r.choice(s.parameters), "type": "String", "overwrite": True},
    "kms_key": lambda r, s, g: {"keyId": f"arn:aws:kms:{g}:{s.account}:key/{r.choice(s.keys)}"},
    "kms_decrypt": lambda _r, _s, _g: {"encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
    "kms_datakey": lambda r, s, g: {
        "keyId": f"arn:aws:kms:{g}:{s.account}:key/{r.choice(s.keys)}",
        "keySpec": "AES_256",
    },
    "athena_query": lambda r, _s, _g: {"queryExecutionId": _uuid(r)},
    "athena_start": lambda _r, _s, _g: {
        "queryString": "SELECT ... (query redacted)",
        "workGroup": "primary",
        "queryExecutionContext": {"database": "analytics"},
    },
    "glue_db": lambda _r, _s, _g: {"databaseName": "analytics"},
    "glue_table": lambda r, s, _g: {"databaseName": "analytics", "tableName": r.choice(s.tables)},
    "glue_job": lambda r, s, _g: {"jobName": f"etl-{r.choice(s.tables)}"},
    "detector": lambda _r, _s, _g: {"detectorId": "12abc34d567e8fa901bc2d34e56789f0"},
    "snapshot": lambda r, _s, _g: {"volumeId": f"vol-0{_hex(r, 16)}", "description": "nightly backup"},
    "snapshot_id": lambda r, _s, _g: {"snapshotId": f"snap-0{_hex(r, 16)}"},
    "cost": lambda _r, _s, _g: {
        "granularity": "DAILY",
        "metrics": ["UnblendedCost"],
        "timePeriod": {"start": "", "end": ""},
    },
}


# ----------------------------------------------------------------------------------------------------------
# The world: collects records into delivery slots
# ----------------------------------------------------------------------------------------------------------
class _World:
    def __init__(self, cfg: SimulationConfig) -> None:
        self.cfg = cfg
        self.t0 = int(cfg.start.timestamp())
        self.t1 = self.t0 + cfg.days * _DAY
        self.slot = cfg.file_minutes * 60
        self.global_region = "us-east-1" if "us-east-1" in cfg.regions else cfg.regions[0]
        self.buckets: dict[tuple[str, str, int], list[tuple[int, dict[str, Any]]]] = {}
        self.res: dict[str, _Res] = {}
        self._tls: dict[tuple[str, str, str], dict[str, str]] = {}
        self.count = 0
        # Episode tagging: records added while ``tag`` is set belong to that incident (AWS Internal excepted).
        self.tag: str | None = None
        self.tagged: dict[str, list[tuple[str, str, int, dict[str, Any]]]] = {}
        self.delivered: dict[tuple[str, str, int], int] = {}  # (account, region, slot) -> delivery time

    def rng(self, *parts: object) -> random.Random:
        return random.Random("/".join(map(str, (self.cfg.seed, *parts))))

    def region_of(self, svc: str, name: str, region: str) -> str:
        if svc in _GLOBAL_SERVICES or (svc, name) in _GLOBAL_OPS:
            return self.global_region
        return region

    def tls(self, svc: str, region: str, version: str) -> dict[str, str]:
        key = (svc, region, version)
        d = self._tls.get(key)
        if d is None:
            if svc in _GLOBAL_SERVICES:
                host = "signin.aws.amazon.com" if svc == "signin" else f"{svc}.amazonaws.com"
            else:
                host = f"{svc}.{region}.amazonaws.com"
            suite = "TLS_AES_128_GCM_SHA256" if version == "TLSv1.3" else "ECDHE-RSA-AES128-GCM-SHA256"
            d = {"tlsVersion": version, "cipherSuite": suite, "clientProvidedHostHeader": host}
            self._tls[key] = d
        return d

    def emit(
        self,
        rng: random.Random,
        ts: int,
        account: str,
        region: str,
        ident: dict[str, Any],
        method: _Method,
        ip: str,
        ua: str,
        *,
        error: str = "",
        tls: str = "TLSv1.3",
        params: dict[str, Any] | bool | None = False,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Build one record and file it into its delivery slot; returns its eventID."""
        svc, name, read_only, kind = method
        region = self.region_of(svc, name, region)
        if params is False:
            params = _PARAMS[kind](rng, self.res[account], region)
        rec: dict[str, Any] = {
            "eventVersion": _EVENT_VERSION,
            "userIdentity": ident,
            "eventTime": _iso(ts),
            "eventSource": f"{svc}.amazonaws.com",
            "eventName": name,
            "awsRegion": region,
            "sourceIPAddress": ip,
            "userAgent": ua,
        }
        if error:
            action = f"{svc}:{_action(name)}"
            arn = ident.get("arn", "")
            if svc == "ec2":
                rec["errorCode"] = "Client.UnauthorizedOperation"
                rec["errorMessage"] = (
                    f"You are not authorized to perform this operation. User: {arn} is not authorized to "
                    f"perform: {action} because no identity-based policy allows the {action} action"
                )
            else:
                rec["errorCode"] = error
                rec["errorMessage"] = (
                    f"User: {arn} is not authorized to perform: {action} because no identity-based policy "
                    f"allows the {action} action"
                )
        rec["requestParameters"] = params
        rec["responseElements"] = None
        rec["requestID"] = f"{rng.getrandbits(64):016X}" if svc == "s3" else _uuid(rng)
        event_id = _uuid(rng)
        rec["eventID"] = event_id
        rec["readOnly"] = read_only
        rec["eventType"] = "AwsApiCall"
        rec["managementEvent"] = True
        rec["recipientAccountId"] = account
        if extra:
            rec.update(extra)
        rec["eventCategory"] = "Management"
        if tls:
            rec["tlsDetails"] = self.tls(svc, region, tls)
        self.add(ts, account, region, rec)
        return event_id

    def add(self, ts: int, account: str, region: str, rec: dict[str, Any]) -> None:
        if not self.t0 <= ts < self.t1:
            return
        key = (account, region, ts // self.slot)
        lst = self.buckets.get(key)
        if lst is None:
            lst = self.buckets[key] = []
        lst.append((ts, rec))
        self.count += 1
        if self.tag is not None and rec["sourceIPAddress"] != "AWS Internal":
            self.tagged.setdefault(self.tag, []).append((account, region, ts, rec))


# ----------------------------------------------------------------------------------------------------------
# Humans
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Trip:
    offset: int  # seconds east of UTC
    ips: list[str]
    ip_cum: list[float]
    tag: str


class _HumanActor:
    def __init__(
        self,
        world: _World,
        index: int,
        iam_user: bool,
        rng: random.Random,
        *,
        country: str | None = None,
        profile: str | None = None,
    ) -> None:
        cfg = world.cfg
        self.world = world
        self.rng = rng
        self.index = index
        self.name = _NAMES[index % len(_NAMES)] + (str(index // len(_NAMES)) if index >= len(_NAMES) else "")
        self.email = f"{self.name}@{cfg.email_domain}"
        self.country = country or _human_country(index)
        self.offset = rng.choice(_UTC_OFFSETS[self.country]) * 60
        self.profile = profile or _human_profile(index)
        # Episodes (none by default): local day -> trip, local day -> crossover, first working day of a hire.
        self.trips: dict[int, _Trip] = {}
        self.crossovers: dict[int, tuple[str, str]] = {}  # local day -> (kind, incident id)
        self.start_day: int | None = None
        self.hire_tag: str | None = None
        self.kind = "iam_user" if iam_user else "sso"
        prefixes = rng.sample(_PUBLIC_PREFIXES[self.country], rng.randint(1, 3))
        self.ips = [f"{p}.{rng.randint(2, 254)}" for p in prefixes]
        self.ip_cum = list(itertools.accumulate([6.0, 3.0, 1.0][: len(self.ips)]))
        self.home_account = cfg.accounts[index % len(cfg.accounts)]
        self.accounts: tuple[str, ...] = cfg.accounts  # the accounts an SSO user hops between
        eu = [r for r in cfg.regions if r.startswith("eu-")]
        self.home_region = eu[0] if eu and self.country in {"DE", "GB"} else cfg.regions[0]
        self.rate = cfg.events_per_human_hour * rng.lognormvariate(0.0, 0.35) / 1.06  # mean of lognormal
        mix = list(_TOOL_MIX[self.profile])
        if iam_user and mix[1] > 0.3:  # IAM users are mostly key users
            mix[1] = 0.15
        self.tool_cum = list(itertools.accumulate(mix))
        methods = list(_PROFILES[self.profile])
        for i in range(len(methods) - 1):  # personal taste: swap a few neighbours
            if rng.random() < 0.25:
                methods[i], methods[i + 1] = methods[i + 1], methods[i]
        self.methods = methods[: rng.randint(len(methods) - 6, len(methods))]
        self.method_cum = _zipf_cum(len(self.methods))
        cli = rng.choice(_CLI_BUILDS)
        self.cli_prefix = f"aws-cli/{cli[0]} Python/{cli[1]} {cli[2]} prompt/off command/"
        self.boto = _boto_ua(rng.choice(_BOTO_BUILDS), rng.choice(["standard", "legacy"]))
        self.tf = rng.choice(_TF_BUILDS)
        self.browser = rng.choice(_BROWSERS)
        self.error_rate = 0.015
        self.key_id = "AKIA" + _rand(rng, _KEYCHARS, 16) if iam_user else None
        self.principal_id = ("AIDA" if iam_user else "AROA") + _rand(rng, _IDCHARS, 17)
        self._idents: dict[tuple[str, int, bool], dict[str, Any]] = {}
        self.arns: list[str] = []
        self._sso: dict[str, tuple[str, str]] = {}
        # Where the person is (a trip's country while on it), when their last work ended, and the
        # time before which they are still on their way (``move_to``).
        self.where = self.country
        self.busy_until = 0
        self.free_from = 0

    def user_arn(self, account: str) -> str:
        return f"arn:aws:iam::{account}:user/{self.name}"

    def long_term_ident(self, account: str) -> dict[str, Any]:
        return {
            "type": "IAMUser",
            "principalId": self.principal_id,
            "arn": self.user_arn(account),
            "accountId": account,
            "accessKeyId": self.key_id,
            "userName": self.name,
        }

    def sso_role(self, account: str) -> tuple[str, str]:
        """(role name, role id) of this human's permission set in an account (stable per account)."""
        got = self._sso.get(account)
        if got is None:
            r = self.world.rng("sso", account, self.profile)
            role = f"AWSReservedSSO_{_SSO_PERMISSION_SETS[self.profile]}_{_hex(r, 16)}"
            got = self._sso[account] = (role, "AROA" + _rand(r, _IDCHARS, 17))
        return got

    def sso_ident(self, account: str, access_key_id: str, created: int) -> dict[str, Any]:
        """An IAM Identity Center session of this human's permission set in ``account``."""
        role, role_id = self.sso_role(account)
        return {
            "type": "AssumedRole",
            "principalId": f"{role_id}:{self.email}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{self.email}",
            "accountId": account,
            "accessKeyId": access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/{role}",
                    "accountId": account,
                    "userName": role,
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "false"},
            },
        }

    def ident(self, account: str, day: int, console: bool, created: int) -> dict[str, Any]:
        key = (account, day, console)
        got = self._idents.get(key)
        if got is not None:
            return got
        if self.kind == "iam_user" and not console:
            got = self.long_term_ident(account)
        elif self.kind == "iam_user":
            got = self.long_term_ident(account) | {
                "accessKeyId": "ASIA" + _rand(self.rng, _KEYCHARS, 16),
                "sessionContext": {
                    "sessionIssuer": {},
                    "webIdFederationData": {},
                    "attributes": {"creationDate": _iso(created), "mfaAuthenticated": "true"},
                },
            }
        else:
            got = self.sso_ident(account, "ASIA" + _rand(self.rng, _KEYCHARS, 16), created)
        self._idents[key] = got
        if len(self._idents) > 64:  # old sessions are never reused
            self._idents.pop(next(iter(self._idents)))
        return got

    def all_arns(self) -> tuple[str, ...]:
        cfg = self.world.cfg
        if self.kind == "iam_user":
            return (self.user_arn(self.home_account),)
        return tuple(
            f"arn:aws:sts::{a}:assumed-role/{self.sso_role(a)[0]}/{self.email}" for a in cfg.accounts
        )

    def public(self) -> Human:
        return Human(
            name=self.name,
            email=self.email,
            kind=self.kind,
            profile=self.profile,
            country=self.country,
            utc_offset_minutes=self.offset // 60,
            ips=tuple(self.ips),
            home_account=self.home_account,
            home_region=self.home_region,
            access_key_id=self.key_id,
            arns=self.all_arns(),
        )

    # -- behaviour ------------------------------------------------------------------------------------
    def run(self) -> None:
        w = self.world
        first = (w.t0 + self.offset) // _DAY - 1
        last = (w.t1 + self.offset) // _DAY + 1
        w.tag = self.hire_tag
        for day in range(first, last + 1):
            if self.start_day is not None and day < self.start_day:
                continue
            trip = self.trips.get(day) if self.trips else None
            self.move_to(_country_of(trip.ips[0]) or self.country if trip is not None else self.country)
            if trip is not None:
                self.travel_day(day, trip)
            elif self.crossovers and day in self.crossovers:
                self.crossover_day(day, *self.crossovers[day])
            else:
                self.day(day, day * _DAY - self.offset, forced=self.start_day == day)
        w.tag = None

    def move_to(self, where: str) -> None:
        """The person is in ``where`` from the day about to be lived: a journey from where they were
        begins after their last work there, and they do not work before they arrive."""
        if where != self.where:
            self.free_from = self.busy_until + journey_seconds(self.where, where)
            self.where = where

    def arrived(
        self, midnight: int, start_h: float, end_h: float, budget: float
    ) -> tuple[float, float] | None:
        """Work planned from ``start_h`` to ``end_h`` (hours after ``midnight``) with ``budget`` calls,
        as the person can do it: from their arrival (``free_from``) on, with the calls of the hours
        left (start, budget); None while they are still on their way at its end. The work then
        counts as done until ``end_h``."""
        begin = max(start_h, (self.free_from - midnight) / _HOUR)
        if begin >= end_h:
            return None
        self.busy_until = max(self.busy_until, midnight + int(end_h * _HOUR))
        return begin, budget * (end_h - begin) / (end_h - start_h)

    def travel_day(self, day: int, trip: _Trip) -> None:
        """A working day abroad: the trip's time zone and networks, the usual work (never a day off)."""
        home = (self.offset, self.ips, self.ip_cum)
        self.offset, self.ips, self.ip_cum = trip.offset, trip.ips, trip.ip_cum
        self.world.tag = trip.tag
        try:
            self.day(day, day * _DAY - trip.offset, forced=True)
        finally:
            self.offset, self.ips, self.ip_cum = home
            self.world.tag = self.hire_tag

    def crossover_day(self, day: int, kind: str, tag: str) -> None:
        """A day at home on another team's work: a Terraform deploy or data analysis, in office hours."""
        rng, w = self.rng, self.world
        midnight = day * _DAY - self.offset
        w.tag = tag
        sessions = sorted(rng.uniform(9.0, 17.0) for _ in range(rng.randint(3, 5)))
        logged_in = False
        for hour in sessions:
            ts = midnight + int(hour * _HOUR)
            account, region = self.home_account, self.home_region
            ip = self.ips[_pick(rng, self.ip_cum)]
            if kind == "terraform-deploy":
                methods = rng.choices(_TERRAFORM_READS, k=rng.randint(25, 60)) + list(_DEPLOY_EXTRA_READS)
                methods += rng.choices(_TERRAFORM_WRITES, k=rng.randint(3, 10))
                rng.shuffle(methods)
                ident = self.ident(account, day, console=False, created=ts - rng.randint(30, 900))
                self.burst("terraform", len(methods), ts, account, region, ip, ident, methods)
            else:
                tool = "console" if rng.random() < 0.5 else "boto3"
                data = _PROFILES["data"]
                methods = rng.choices(data, cum_weights=_zipf_cum(len(data)), k=rng.randint(20, 50))
                ident = self.ident(account, day, tool == "console", ts - rng.randint(30, 900))
                start = ts
                if tool == "console" and not logged_in:
                    logged_in = True
                    self.console_login(ts, account, ip, ident)
                    start += rng.randint(3, 15)
                self.burst(tool, len(methods), start, account, region, ip, ident, methods)
        w.tag = self.hire_tag

    def day(self, day: int, midnight: int, *, forced: bool) -> None:
        """One local day of the usual work pattern (``forced``: no day off on a weekday)."""
        rng = self.rng
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
        if weekday < 5:
            if not forced and rng.random() < 0.04:  # a day off
                return
            start = min(max(rng.gauss(8.75, 0.6), 7.25), 10.5)
            end = min(max(rng.gauss(17.4, 0.7), 15.5), 18.6)
            self.work(day, midnight, start, end, self.rate * (end - start) * rng.lognormvariate(0, 0.3))
            if rng.random() < 0.15:  # evening on-call / catching up
                t = rng.uniform(19.5, 22.5)
                self.work(day, midnight, t, t + 1.0, self.rate * 0.8)
        elif rng.random() < 0.12:  # the odd weekend session
            t = rng.uniform(10.0, 16.0)
            self.work(day, midnight, t, t + 1.0, self.rate * 0.6)

    def work(self, day: int, midnight: int, start_h: float, end_h: float, budget: float) -> None:
        rng, cfg = self.rng, self.world.cfg
        arrived = self.arrived(midnight, start_h, end_h, budget)
        if arrived is None:  # on the way
            return
        start_h, budget = arrived
        remaining = int(budget)
        plan: list[tuple[int, str, int]] = []
        while remaining > 0:
            tool = _TOOLS[_pick(rng, self.tool_cum)]
            hour = rng.uniform(start_h, end_h)
            if 12.0 <= hour < 13.0 and rng.random() < 0.6:  # lunch
                hour = rng.uniform(start_h, end_h)
            size = {
                "cli": 1 + int(rng.expovariate(1 / 4)),
                "console": rng.randint(4, 24),
                "boto3": rng.randint(2, 30),
                "terraform": rng.randint(15, 60),
            }[tool]
            remaining -= size
            plan.append((midnight + int(hour * _HOUR), tool, size))
        plan.sort()
        logged_in: set[str] = set()
        for ts, tool, size in plan:
            account = self.home_account
            # SSO users hop accounts, except during an episode (its ground truth names one account).
            if (
                self.kind == "sso"
                and len(self.accounts) > 1
                and self.world.tag is None
                and rng.random() < 0.25
            ):
                account = rng.choice(self.accounts)
            region = self.home_region
            if len(cfg.regions) > 1 and rng.random() < 0.2:
                region = rng.choice(cfg.regions)
            console = tool == "console"
            ip = self.ips[_pick(rng, self.ip_cum)]
            ident = self.ident(account, day, console, ts - rng.randint(30, 900))
            start = ts
            if console and account not in logged_in:
                logged_in.add(account)
                self.console_login(ts, account, ip, ident)
                start += rng.randint(3, 15)
            self.burst(tool, size, start, account, region, ip, ident)

    def console_login(self, ts: int, account: str, ip: str, ident: dict[str, Any]) -> None:
        w, rng = self.world, self.rng
        if self.kind == "iam_user":
            who = {k: v for k, v in ident.items() if k not in {"accessKeyId", "sessionContext"}}
        else:  # a federated sign-in carries the session but no access key yet
            who = ident | {"accessKeyId": ""}
        rec: dict[str, Any] = {
            "eventVersion": _EVENT_VERSION,
            "userIdentity": who,
            "eventTime": _iso(ts),
            "eventSource": "signin.amazonaws.com",
            "eventName": "ConsoleLogin",
            "awsRegion": w.global_region,
            "sourceIPAddress": ip,
            "userAgent": self.browser,
            "requestParameters": None,
            "responseElements": {"ConsoleLogin": "Success"},
            "additionalEventData": {
                "LoginTo": "https://console.aws.amazon.com/console/home?state=hashArgs%23&isauthcode=true",
                "MobileVersion": "No",
                "MFAUsed": "Yes" if self.kind == "iam_user" else "No",
            },
            "eventID": _uuid(rng),
            "readOnly": False,
            "eventType": "AwsConsoleSignIn",
            "managementEvent": True,
            "recipientAccountId": account,
            "eventCategory": "Management",
            "tlsDetails": w.tls("signin", w.global_region, "TLSv1.3"),
        }
        w.add(ts, account, w.global_region, rec)

    def burst(
        self,
        tool: str,
        size: int,
        ts: int,
        account: str,
        region: str,
        ip: str,
        ident: dict[str, Any],
        chosen: list[_Method] | None = None,
    ) -> None:
        rng, w = self.rng, self.world
        if chosen is not None:
            methods = chosen
            gap = {"cli": 25.0, "console": 6.0, "boto3": 2.0, "terraform": 1.5}[tool]
        elif tool == "terraform":
            methods = rng.choices(_TERRAFORM_READS, k=size)
            if rng.random() < 0.3:
                methods += rng.choices(_TERRAFORM_WRITES, k=rng.randint(1, 6))
            gap = 1.5
        else:
            methods = rng.choices(self.methods, cum_weights=self.method_cum, k=size)
            gap = {"cli": 25.0, "console": 6.0, "boto3": 2.0}[tool]
        t = float(ts)
        for m in methods:
            t += rng.expovariate(1 / gap)
            src_ip, ua = ip, ""
            extra: dict[str, Any] | None = None
            if tool == "cli":
                ua = self.cli_prefix + _cli_command(m[0], m[1])
            elif tool == "boto3":
                ua = self.boto
            elif tool == "terraform":
                ua = _terraform_ua(self.tf[0], self.tf[1], m[0])
            elif rng.random() < 0.08:
                src_ip = ua = "AWS Internal"
            else:
                ua = "console.amazonaws.com"
            if tool == "console":
                extra = {"sessionCredentialFromConsole": "true"}
            error = "AccessDenied" if rng.random() < self.error_rate else ""
            w.emit(
                rng,
                int(t),
                account,
                region,
                ident,
                m,
                src_ip,
                ua,
                error=error,
                tls="" if src_ip == "AWS Internal" else "TLSv1.3",
                extra=extra,
            )


def _pick(rng: random.Random, cum: list[float]) -> int:
    x = rng.random() * cum[-1]
    for i, c in enumerate(cum):
        if x < c:
            return i
    return len(cum) - 1


# ----------------------------------------------------------------------------------------------------------
# Automation roles and AWS services
# ----------------------------------------------------------------------------------------------------------
_AUTOMATION_KINDS = (("ci", "ci-deployer"), ("inventory", "inventory-collector"), ("backup", "backup-runner"))
_EXTRA_KINDS = (("cost", "cost-reporter"), ("inventory", "compliance-scanner"), ("ci", "release-pipeline"))


class _RoleActor:
    def __init__(self, world: _World, index: int) -> None:
        cfg = world.cfg
        kinds = _AUTOMATION_KINDS + _EXTRA_KINDS
        kind, name = kinds[index % len(kinds)]
        if index >= len(kinds):
            name = f"{name}-{index // len(kinds) + 1}"
        self.world, self.kind, self.name = world, kind, name
        self.rng = rng = world.rng("role", name)
        self.accounts = tuple(cfg.accounts) if kind in {"ci", "inventory"} else (cfg.accounts[0],)
        if kind == "backup":
            self.vpce: str | None = f"vpce-0{_hex(rng, 16)}"
            self.ips = [f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(4, 250)}"]
        else:
            self.vpce = None
            self.ips = [f"{p}.{rng.randint(2, 254)}" for p in rng.sample(_EC2_US_EAST_1, 2)]
        self.instance = f"i-0{_hex(rng, 16)}"
        self.role_id = {a: "AROA" + _rand(world.rng("roleid", name, a), _IDCHARS, 17) for a in cfg.accounts}
        self.boto = _boto_ua(_BOTO_BUILDS[0])
        self._keys: dict[tuple[str, int], dict[str, Any]] = {}

    def arn(self, account: str) -> str:
        return f"arn:aws:sts::{account}:assumed-role/{self.name}/{self.instance}"

    def public(self) -> AutomationRole:
        return AutomationRole(
            name=self.name,
            kind=self.kind,
            accounts=self.accounts,
            ips=tuple(self.ips),
            vpc_endpoint_id=self.vpce,
            arns=tuple(self.arn(a) for a in self.accounts),
        )

    def ident(self, account: str, ts: int) -> dict[str, Any]:
        """Instance-profile credentials rotate every 6 hours."""
        window = ts // (6 * _HOUR)
        got = self._keys.get((account, window))
        if got is None:
            got = {
                "type": "AssumedRole",
                "principalId": f"{self.role_id[account]}:{self.instance}",
                "arn": self.arn(account),
                "accountId": account,
                "accessKeyId": "ASIA" + _rand(self.rng, _KEYCHARS, 16),
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": self.role_id[account],
                        "arn": f"arn:aws:iam::{account}:role/{self.name}",
                        "accountId": account,
                        "userName": self.name,
                    },
                    "webIdFederationData": {},
                    "attributes": {
                        "creationDate": _iso(window * 6 * _HOUR),
                        "mfaAuthenticated": "false",
                    },
                    "ec2RoleDelivery": "2.0",
                },
            }
            self._keys[(account, window)] = got
        return got

    def run(self) -> None:
        {
            "ci": self.run_ci,
            "inventory": self.run_inventory,
            "backup": self.run_backup,
            "cost": self.run_cost,
        }[self.kind]()

    def run_ci(self) -> None:
        rng, w = self.rng, self.world
        tf = _TF_BUILDS[0]
        for day in range(w.t0 // _DAY, w.t1 // _DAY):
            weekday = (day + 3) % 7
            runs = rng.randint(3, 9) if weekday < 5 else rng.randint(0, 1)
            for _ in range(runs):
                # merges cluster in US working hours (13:00-23:00 UTC)
                hour = rng.uniform(13.0, 23.0) if rng.random() < 0.8 else rng.uniform(0.0, 24.0)
                t = float(day * _DAY + hour * _HOUR)
                account = rng.choice(self.accounts)
                region = rng.choice(w.cfg.regions)
                methods = rng.choices(_TERRAFORM_READS, k=rng.randint(25, 70))
                if rng.random() < 0.4:
                    methods += rng.choices(_TERRAFORM_WRITES, k=rng.randint(2, 10))
                ip = rng.choice(self.ips)
                for m in methods:
                    t += rng.expovariate(1 / 1.2)
                    ts = int(t)
                    ua = _terraform_ua(tf[0], tf[1], m[0])
                    err = "AccessDenied" if rng.random() < 0.003 else ""
                    w.emit(rng, ts, account, region, self.ident(account, ts), m, ip, ua, error=err)

    def run_inventory(self) -> None:
        rng, w = self.rng, self.world
        minute = rng.randint(0, 59)
        ip = self.ips[0]
        for hour in range(w.t0 // _HOUR, w.t1 // _HOUR):
            t = float(hour * _HOUR + minute * 60 + rng.randint(0, 20))
            for account in self.accounts:
                for m in _INVENTORY_GLOBAL:
                    t += rng.uniform(0.2, 1.5)
                    ts = int(t)
                    w.emit(rng, ts, account, w.global_region, self.ident(account, ts), m, ip, self.boto)
                for region in w.cfg.regions:
                    for m in _INVENTORY_SWEEP:
                        t += rng.uniform(0.2, 1.5)
                        ts = int(t)
                        w.emit(rng, ts, account, region, self.ident(account, ts), m, ip, self.boto)

    def run_backup(self) -> None:
        rng, w = self.rng, self.world
        ip, vpce = self.ips[0], {"vpcEndpointId": self.vpce}
        hourly: tuple[_Method, ...] = (
            ("ec2", "DescribeVolumes", True, "ec2_filter"),
            ("ec2", "DescribeSnapshots", True, "ec2_filter"),
        )
        nightly: tuple[_Method, ...] = (
            ("ec2", "CreateSnapshot", False, "snapshot"),
            ("ec2", "DeleteSnapshot", False, "snapshot_id"),
        )
        kms: _Method = ("kms", "GenerateDataKey", True, "kms_datakey")
        for hour in range(w.t0 // _HOUR, w.t1 // _HOUR):
            for account in self.accounts:
                for region in w.cfg.regions:
                    t = float(hour * _HOUR + 300 + rng.randint(0, 90))
                    calls = list(hourly)
                    if hour % 24 == 2:  # the nightly snapshot job
                        calls += [nightly[0]] * rng.randint(4, 9) + [nightly[1]] * rng.randint(3, 9)
                    for m in calls:
                        t += rng.uniform(0.3, 3.0)
                        ts = int(t)
                        ident = self.ident(account, ts)
                        w.emit(rng, ts, account, region, ident, m, ip, self.boto, extra=vpce)
                    # S3 server-side encryption with KMS: KMS is called on the role's behalf
                    ts = int(t) + 1
                    ident = self.ident(account, ts) | {"invokedBy": "AWS Internal"}
                    w.emit(rng, ts, account, region, ident, kms, "AWS Internal", "AWS Internal", tls="")

    def run_cost(self) -> None:
        rng, w = self.rng, self.world
        methods: tuple[_Method, ...] = (
            ("sts", "GetCallerIdentity", True, ""),
            ("ce", "GetCostAndUsage", True, "cost"),
            ("ce", "GetCostForecast", True, "cost"),
            ("organizations", "ListAccounts", True, ""),
        )
        for day in range(w.t0 // _DAY, w.t1 // _DAY):
            t = float(day * _DAY + 6 * _HOUR + rng.randint(0, 600))
            for account in self.accounts:
                for m in methods:
                    t += rng.uniform(0.5, 4.0)
                    ts = int(t)
                    w.emit(
                        rng, ts, account, w.global_region, self.ident(account, ts), m, self.ips[0], self.boto
                    )


def _run_services(world: _World, roles: list[_RoleActor]) -> None:
    cfg, w = world.cfg, world
    rng = w.rng("services")
    for account in cfg.accounts:
        role_id = "AROA" + _rand(w.rng("config-role", account), _IDCHARS, 17)
        role = "AWSServiceRoleForConfig"
        ident = {
            "type": "AssumedRole",
            "principalId": f"{role_id}:AWSConfig-Describe",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/AWSConfig-Describe",
            "accountId": account,
            "accessKeyId": "ASIA" + _rand(rng, _KEYCHARS, 16),
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": f"arn:aws:iam::{account}:role/aws-service-role/config.amazonaws.com/{role}",
                    "accountId": account,
                    "userName": role,
                },
                "webIdFederationData": {},
                "attributes": {"creationDate": _iso(w.t0), "mfaAuthenticated": "false"},
            },
            "invokedBy": "config.amazonaws.com",
        }
        host = "config.amazonaws.com"
        for region in cfg.regions:
            for tick in range(w.t0 // 1200, w.t1 // 1200):  # AWS Config polls every 20 minutes
                t = float(tick * 1200 + rng.randint(0, 300))
                for m in rng.sample(_CONFIG_CALLS, rng.randint(2, 4)):
                    t += rng.uniform(0.1, 2.0)
                    w.emit(rng, int(t), account, region, ident, m, host, host, tls="")
    # CloudTrail checks the bucket ACL before delivering (in the bucket's account and region).
    trail_acct, trail_region = cfg.accounts[0], cfg.regions[0]
    ct = "cloudtrail.amazonaws.com"
    ct_ident = {"type": "AWSService", "invokedBy": ct}
    acl: _Method = ("s3", "GetBucketAcl", True, "")
    params = {"bucketName": cfg.bucket, "Host": f"{cfg.bucket}.s3.amazonaws.com", "acl": ""}
    resources = [{"accountId": trail_acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{cfg.bucket}"}]
    for tick in range(w.t0 // 900, w.t1 // 900):
        ts = tick * 900 + rng.randint(0, 899)
        extra = {"resources": resources, "sharedEventID": _uuid(rng)}
        w.emit(rng, ts, trail_acct, trail_region, ct_ident, acl, ct, ct, params=params, tls="", extra=extra)
    # EC2 fetches instance-profile credentials for the automation instances.
    ec2 = "ec2.amazonaws.com"
    assume: _Method = ("sts", "AssumeRole", True, "")
    for role_actor in roles:
        for account in role_actor.accounts[:1]:
            role_arn = f"arn:aws:iam::{account}:role/{role_actor.name}"
            p = {"roleArn": role_arn, "roleSessionName": role_actor.instance}
            for window in range(w.t0 // (6 * _HOUR), w.t1 // (6 * _HOUR)):
                ts = window * 6 * _HOUR + rng.randint(0, 40)
                res = [{"accountId": account, "type": "AWS::IAM::Role", "ARN": role_arn}]
                extra = {"resources": res, "sharedEventID": _uuid(rng)}
                ident = {"type": "AWSService", "invokedBy": ec2}
                w.emit(
                    rng, ts, account, cfg.regions[0], ident, assume, ec2, ec2, params=p, tls="", extra=extra
                )


# ----------------------------------------------------------------------------------------------------------
# Attacks and benign episodes
# ----------------------------------------------------------------------------------------------------------
_Step = tuple[_Method, str, str, dict[str, Any] | bool | None]  # method, region, error code, parameters
_INCIDENT_IDS: dict[str, tuple[str, ...]] = {
    "stolen-key-recon-new-country": ("attack-recon-new-country",),
    "hijacked-admin-persistence": ("attack-hijacked-admin-persistence",),
    "low-and-slow": ("attack-low-and-slow-probe", "attack-low-and-slow-exfil"),
    "burst": ("attack-burst",),
    "attacker-in-travel-country": ("attack-travel-country",),
    "attacker-in-org-country-new-to-principal": ("attack-org-country-new-to-principal",),
    FOREIGN_ENDPOINT_SCENARIO: ("attack-foreign-vpc-endpoint",),
}
_BURST_METHODS: tuple[_Method, ...] = (
    ("ec2", "DescribeInstances", True, "ec2_instances"),
    ("ec2", "DescribeVolumes", True, "ec2_filter"),
    ("ec2", "DescribeSecurityGroups", True, "ec2_filter"),
    ("ec2", "DescribeVpcs", True, "ec2_filter"),
    ("ec2", "DescribeSubnets", True, "ec2_filter"),
    ("ec2", "DescribeSnapshots", True, "ec2_filter"),
    ("ec2", "DescribeRegions", True, "ec2_regions"),
    ("iam", "ListUsers", True, ""),
    ("iam", "ListRoles", True, ""),
    ("iam", "ListPolicies", True, ""),
    ("iam", "GetRole", True, "role"),
    ("iam", "ListAttachedRolePolicies", True, "role"),
    ("iam", "ListAccessKeys", True, "user"),
    ("s3", "ListBuckets", True, "s3_host"),
    ("s3", "GetBucketPolicy", True, "bucket_policy"),
    ("s3", "GetBucketAcl", True, "bucket_acl"),
    ("lambda", "ListFunctions20150331", True, ""),
    ("lambda", "GetFunction20150331v2", True, "function"),
    ("dynamodb", "ListTables", True, ""),
    ("dynamodb", "DescribeTable", True, "table"),
    ("rds", "DescribeDBInstances", True, ""),
    ("secretsmanager", "ListSecrets", True, ""),
    ("kms", "ListKeys", True, ""),
    ("logs", "DescribeLogGroups", True, ""),
    ("sqs", "ListQueues", True, ""),
    ("sns", "ListTopics", True, ""),
    ("cloudformation", "DescribeStacks", True, "stack_opt"),
    ("ssm", "DescribeParameters", True, ""),
)


@dataclass(frozen=True, slots=True)
class _Episode:
    """What was planted (intent); :func:`_incident` measures the rest from the generated records."""

    id: str
    kind: str
    scenario: str
    description: str
    account_id: str


def _pick_ips(rng: random.Random, country: str, n: int, avoid: set[str]) -> list[str]:
    """``n`` fresh host addresses of ``country`` in distinct /24s, none of them in ``avoid``."""
    out: list[str] = []
    for p in rng.sample(_PUBLIC_PREFIXES[country], min(n, len(_PUBLIC_PREFIXES[country]))):
        ip = f"{p}.{rng.randint(2, 254)}"
        while ip in avoid or ip in out:
            ip = f"{p}.{rng.randint(2, 254)}"
        out.append(ip)
    return out


def _run_steps(
    world: _World,
    rng: random.Random,
    *,
    name: str,
    country: str,
    account: str,
    ident: dict[str, Any],
    steps: Sequence[_Step],
    t: float,
    span: float,
    ips: Sequence[str],
    uas: Sequence[str],
    extra: dict[str, Any] | None = None,
) -> PlantedAttack:
    """Emit ``steps`` over about ``span`` seconds after ``t``; half-way the attacker switches IP and tool.
    ``extra``: top-level fields every record carries (a VPC endpoint's)."""
    ids: list[str] = []
    times: list[int] = []
    used_ips: list[str] = []
    used_uas: list[str] = []
    methods: list[str] = []
    switch = len(steps) // 2
    gap = span / len(steps)
    for i, (method, region, err, params) in enumerate(steps):
        t += rng.uniform(0.7 * gap, 1.3 * gap)
        ip = ips[0] if i < switch else ips[-1]
        ua = uas[0] if i < switch else uas[-1]
        ts = int(t)
        eid = world.emit(
            rng,
            ts,
            account,
            region,
            ident,
            method,
            ip,
            ua,
            error=err,
            tls="TLSv1.2",
            params=params,
            extra=extra,
        )
        ids.append(eid)
        times.append(ts)
        for seq, v in ((used_ips, ip), (used_uas, ua), (methods, f"{method[0]}.amazonaws.com:{method[1]}")):
            if v not in seq:
                seq.append(v)
    return PlantedAttack(
        name=name,
        principal_arn=str(ident["arn"]),
        access_key_id=str(ident["accessKeyId"]),
        country=country,
        source_ips=tuple(used_ips),
        first_event=_dt(min(times)),
        last_event=_dt(max(times)),
        methods=tuple(methods),
        account_id=account,
        event_ids=tuple(ids),
        user_agents=tuple(used_uas),
    )


def _plant_attack(
    world: _World, victim: _HumanActor, *, day: int, country: str, rng: random.Random, name: str
) -> PlantedAttack:
    """Stolen long-term key, ~20 minutes of reconnaissance from ``country`` (the classic planted attack)."""
    cfg, w = world.cfg, world
    prefixes = rng.sample(_PUBLIC_PREFIXES[country], 2)
    ips = [f"{p}.{rng.randint(2, 254)}" for p in prefixes]
    account = victim.home_account
    ident = victim.long_term_ident(account)
    t = float(w.t0 + day * _DAY + rng.randint(1 * _HOUR, 21 * _HOUR))
    steps: list[_Step] = []
    for svc, method_name, ro, kind, per_region, err in _ATTACK_PLAN:
        method: _Method = (svc, method_name, ro, kind if kind != "victim" else "")
        if kind == "victim":
            steps.append((method, w.global_region, err, {"userName": victim.name}))
        elif kind == "user":
            others = [u for u in w.res[account].users if u != victim.name]
            steps.extend(
                ((svc, method_name, ro, ""), w.global_region, err, {"userName": u})
                for u in rng.sample(others, min(2, len(others)))
            )
        elif per_region:
            steps.extend((method, region, err, False) for region in cfg.regions)
        else:
            steps.append((method, w.global_region, err, False))
    return _run_steps(
        w,
        rng,
        name=name,
        country=country,
        account=account,
        ident=ident,
        steps=steps,
        t=t,
        span=20 * 60,
        ips=ips,
        uas=_ATTACK_USER_AGENTS,
    )


def _persistence_steps(world: _World, rng: random.Random) -> list[_Step]:
    cfg, g = world.cfg, world.global_region
    user = rng.choice(["svc-support", "backup-admin", "aws-health-check", "devops-temp"])
    trail = f"arn:aws:cloudtrail:{cfg.regions[0]}:{cfg.accounts[0]}:trail/{cfg.trail_name}"
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    steps: list[_Step] = [
        (("sts", "GetCallerIdentity", True, ""), g, "", None),
        (("iam", "ListUsers", True, ""), g, "", None),
        (("iam", "ListRoles", True, ""), g, "", None),
        (("iam", "CreateUser", False, ""), g, "", {"userName": user}),
        (("iam", "CreateAccessKey", False, ""), g, "", {"userName": user}),
        (("iam", "AttachUserPolicy", False, ""), g, "", {"userName": user, "policyArn": admin}),
        (("iam", "CreateLoginProfile", False, ""), g, "", {"userName": user, "passwordResetRequired": False}),
        (("cloudtrail", "DescribeTrails", True, ""), cfg.regions[0], "", None),
    ]
    steps += [(("guardduty", "ListDetectors", True, ""), r, "", None) for r in cfg.regions]
    steps.append((("cloudtrail", "StopLogging", False, ""), cfg.regions[0], "", {"name": trail}))
    return steps


def _theft_steps(world: _World, rng: random.Random, account: str, victim: str) -> list[_Step]:
    """Recon of the stolen identity, then secrets and parameters (a data thief's session)."""
    res, g, home = world.res[account], world.global_region, world.cfg.regions[0]
    steps: list[_Step] = [
        (("sts", "GetCallerIdentity", True, ""), g, "", None),
        (("iam", "ListAttachedUserPolicies", True, ""), g, "", {"userName": victim}),
        (("s3", "ListBuckets", True, "s3_host"), g, "", False),
        (("secretsmanager", "ListSecrets", True, ""), home, "", False),
    ]
    steps += [(("s3", "GetBucketPolicy", True, "bucket_policy"), home, "", False)] * rng.randint(1, 3)
    secrets = rng.sample(res.secrets, min(len(res.secrets), rng.randint(2, 3)))
    steps += [(("secretsmanager", "GetSecretValue", True, ""), home, "", {"secretId": s}) for s in secrets]
    steps += [(("ssm", "GetParameter", True, "parameter"), home, "", False)] * rng.randint(1, 3)
    steps.append((("lambda", "ListFunctions20150331", True, ""), home, "", False))
    return steps


class _Planter:
    """Plants one :class:`AttackSpec`; each incident's records are tagged with its id."""

    def __init__(
        self,
        world: _World,
        spec: AttackSpec,
        victim: _HumanActor,
        ids: tuple[str, ...],
        avoid: set[str],
        humans: Sequence[_HumanActor] = (),
    ) -> None:
        self.world, self.spec, self.victim, self.ids, self.avoid = world, spec, victim, ids, avoid
        self.humans = humans
        self.rng = world.rng("scenario", spec.scenario, spec.day, spec.victim, spec.country)
        self.account = victim.home_account
        self.out: list[tuple[_Episode, PlantedAttack]] = []

    def start(self, day: int) -> float:
        return float(self.world.t0 + day * _DAY + self.rng.randint(1 * _HOUR, 20 * _HOUR))

    def key_ident(self) -> dict[str, Any]:
        return self.victim.long_term_ident(self.account)

    def ips(self, n: int) -> list[str]:
        return _pick_ips(self.rng, self.spec.country, n, self.avoid)

    def run(
        self,
        k: int,
        what: str,
        ident: dict[str, Any],
        steps: Sequence[_Step],
        times: tuple[float, float],
        ips: Sequence[str],
        uas: Sequence[str],
        extra: dict[str, Any] | None = None,
    ) -> None:
        w, incident = self.world, self.ids[k]
        w.tag = incident
        try:
            attack = _run_steps(
                w,
                self.rng,
                name=incident,
                country=self.spec.country,
                account=self.account,
                ident=ident,
                steps=steps,
                t=times[0],
                span=times[1],
                ips=ips,
                uas=uas,
                extra=extra,
            )
        finally:
            w.tag = None
        self.out.append((_Episode(incident, "attack", self.spec.scenario, what, self.account), attack))

    def plant(self) -> list[tuple[_Episode, PlantedAttack]]:
        {
            "stolen-key-recon-new-country": self.recon,
            "hijacked-admin-persistence": self.persistence,
            "low-and-slow": self.low_and_slow,
            "burst": self.burst,
            "attacker-in-travel-country": self.theft,
            "attacker-in-org-country-new-to-principal": self.theft,
            FOREIGN_ENDPOINT_SCENARIO: self.foreign_endpoint,
        }[self.spec.scenario]()
        return self.out

    def recon(self) -> None:
        spec, w = self.spec, self.world
        w.tag = self.ids[0]
        try:
            attack = _plant_attack(
                w, self.victim, day=spec.day, country=spec.country, rng=self.rng, name=w.tag
            )
        finally:
            w.tag = None
        what = f"{self.victim.name}'s long-term access key used from {spec.country} for ~20 minutes of recon"
        self.out.append((_Episode(self.ids[0], "attack", spec.scenario, what, self.account), attack))

    def persistence(self) -> None:
        rng, t = self.rng, self.start(self.spec.day)
        key = "ASIA" + _rand(rng, _KEYCHARS, 16)
        ident = self.victim.sso_ident(self.account, key, int(t) - rng.randint(600, 3000))
        steps = _persistence_steps(self.world, rng)
        what = (
            f"{self.victim.name}'s admin SSO session hijacked from {self.spec.country}: "
            "a backdoor user with a key, a login profile and AdministratorAccess, then StopLogging"
        )
        times = (t, rng.uniform(8, 18) * 60)
        self.run(0, what, ident, steps, times, self.ips(1), _ATTACK_USER_AGENTS[:1])

    def low_and_slow(self) -> None:
        spec, rng, w = self.spec, self.rng, self.world
        ips = self.ips(2)
        probe: list[_Step] = [(("sts", "GetCallerIdentity", True, ""), w.global_region, "", None)]
        what = f"a single GetCallerIdentity with {self.victim.name}'s stolen key from {spec.country}"
        self.run(
            0, what, self.key_ident(), probe, (self.start(spec.day), 1.0), ips[:1], _ATTACK_USER_AGENTS[1:]
        )
        later = self.start(spec.day + spec.follow_up_days)
        steps = _theft_steps(w, rng, self.account, self.victim.name)
        secret: _Method = ("secretsmanager", "GetSecretValue", True, "secret")
        steps += [(secret, w.cfg.regions[0], "", False)] * rng.randint(2, 5)
        what = f"{spec.follow_up_days} days after the probe, slow secret theft with the same key and country"
        times = (later, rng.uniform(60, 120) * 60)
        self.run(1, what, self.key_ident(), steps, times, ips, _ATTACK_USER_AGENTS[1:])

    def blend_steps(self) -> list[_Step]:
        """The everyday calls of someone who works from the attack country (a colleague who lives
        there, or the traveller who went there): every (method, country) pair is already known to
        the organization, so a first-seen rule and a per-country model have nothing to see."""
        spec, rng = self.spec, self.rng
        if "travel" in spec.scenario:
            models = [
                h
                for h in self.humans
                if any(_country_of(ip) == spec.country for trip in h.trips.values() for ip in trip.ips)
            ]
        else:
            models = [h for h in self.humans if h.country == spec.country and h is not self.victim]
        model = models[0] if models else self.victim
        chosen = rng.choices(model.methods[:6], cum_weights=model.method_cum[:6], k=rng.randint(10, 20))
        return [(m, rng.choice(self.world.cfg.regions), "", False) for m in chosen]

    def burst(self) -> None:
        rng, regions = self.rng, self.world.cfg.regions
        n = rng.randint(300, 800)
        steps = [
            (m, rng.choice(regions), "AccessDenied" if rng.random() < 0.08 else "", False)
            for m in rng.choices(_BURST_METHODS, k=n)
        ]
        what = f"{n} Describe/List/Get calls within ~15 minutes with {self.victim.name}'s stolen key"
        times = (self.start(self.spec.day), rng.uniform(10, 15) * 60)
        self.run(0, what, self.key_ident(), steps, times, self.ips(2), _ATTACK_USER_AGENTS[1:])

    def foreign_endpoint(self) -> None:
        """The stolen key used from an instance in the attacker's own VPC, through an interface endpoint
        of the attacker's account: as CloudTrail records it in the victim's account, a private
        ``sourceIPAddress``, the endpoint in ``vpcEndpointId`` and its owner in ``vpcEndpointAccountId``
        (top-level fields; the owner since eventVersion 1.09). Interface endpoints are regional, so every
        call goes to the endpoint's region: the identity, then secrets and parameters."""
        spec, rng, region = self.spec, self.rng, self.world.cfg.regions[0]
        owner = spec.country.removeprefix("VPCE:")
        # An instance of the attacker's VPC (a 10.x range, like most VPCs; AWS keeps .0-.3 of a subnet)
        instance = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(4, 254)}"
        endpoint = {
            "eventVersion": "1.09",
            "vpcEndpointId": "vpce-" + _hex(rng, 17),
            "vpcEndpointAccountId": owner,
        }
        secret: _Method = ("secretsmanager", "GetSecretValue", True, "secret")
        steps: list[_Step] = [
            (("sts", "GetCallerIdentity", True, ""), region, "", None),
            (("secretsmanager", "ListSecrets", True, ""), region, "", False),
            *[(secret, region, "", False)] * rng.randint(2, 4),
            *[(("ssm", "GetParameter", True, "parameter"), region, "", False)] * rng.randint(1, 3),
            (("lambda", "ListFunctions20150331", True, ""), region, "", False),
        ]
        what = (
            f"{self.victim.name}'s stolen key used through a VPC endpoint of account {owner}, outside the "
            f"organization, from {instance} in the attacker's own VPC"
        )
        times = (self.start(spec.day), rng.uniform(10, 25) * 60)
        self.run(0, what, self.key_ident(), steps, times, [instance], _ATTACK_USER_AGENTS[1:2], endpoint)

    def theft(self) -> None:
        spec, rng = self.spec, self.rng
        ips = self.ips(rng.randint(1, 2))
        steps = self.blend_steps()
        where = "seen only on a colleague's trip" if "travel" in spec.scenario else "where colleagues live"
        what = (
            f"{self.victim.name}'s stolen key used from {spec.country} ({where}), blending in: the calls "
            "people already make from there"
        )
        times = (self.start(spec.day), rng.uniform(15, 40) * 60)
        self.run(0, what, self.key_ident(), steps, times, ips, _ATTACK_USER_AGENTS)


_COUNTRY_OF_PREFIX: dict[str, str] = {p: c for c, ps in _PUBLIC_PREFIXES.items() for p in ps} | dict.fromkeys(
    _EC2_US_EAST_1, "US"
)


def _country_of(ip: str) -> str | None:
    return _COUNTRY_OF_PREFIX.get(ip.rpartition(".")[0])


def _location_of(rec: dict[str, Any], accounts: tuple[str, ...]) -> str | None:
    """Where the detector scores a record from: ``VPCE:<owner>`` through a VPC endpoint of an account
    outside the organization, else the country of its address (None when it has none)."""
    owner = rec.get("vpcEndpointAccountId")
    if owner and owner not in accounts:
        return f"VPCE:{owner}"
    return _country_of(rec["sourceIPAddress"])


def _measure_incidents(world: _World, episodes: Sequence[_Episode]) -> tuple[dict[str, Any], ...]:
    """The ground truth of each episode, measured on the generated records (after delivery)."""
    out: list[dict[str, Any]] = []
    for ep in episodes:
        recs = sorted(world.tagged.get(ep.id, ()), key=lambda it: it[2])
        if not recs:
            raise ValueError(f"episode {ep.id} produced no events inside the simulated window")
        arns: list[str] = []
        keys: list[str] = []
        ips: list[str] = []
        methods: list[str] = []
        countries = {_location_of(rec, world.cfg.accounts) for _, _, _, rec in recs}
        for _, _, _, rec in recs:
            who = rec["userIdentity"]
            for seq, v in (
                (arns, who.get("arn", "")),
                (keys, who.get("accessKeyId", "")),
                (ips, rec["sourceIPAddress"]),
                (methods, f"{rec['eventSource']}:{rec['eventName']}"),
            ):
                if v and v not in seq:
                    seq.append(v)
        if len(countries) != 1 or None in countries:
            raise ValueError(f"episode {ep.id} spans countries {countries}")
        accounts = {account for account, _, _, _ in recs}
        if accounts != {ep.account_id}:
            raise ValueError(f"episode {ep.id} spans accounts {accounts}, expected {ep.account_id}")
        out.append(
            {
                "id": ep.id,
                "kind": ep.kind,
                "scenario": ep.scenario,
                "description": ep.description,
                "account_id": ep.account_id,
                "principal_arns": arns,
                "access_key_ids": keys,
                "country": countries.pop(),
                "source_ips": ips,
                "first_event": recs[0][2],
                "last_event": recs[-1][2],
                "first_delivery": min(world.delivered[(a, r, ts // world.slot)] for a, r, ts, _ in recs),
                "events": len(recs),
                "methods": methods,
            }
        )
    # First appearance of each incident country, overall and per principal, from every record.
    wanted = {inc["country"] for inc in out}
    principals = {arn for inc in out for arn in inc["principal_arns"]}
    org_first: dict[str, int] = {}
    principal_first: dict[tuple[str, str], int] = {}
    for items in world.buckets.values():
        for ts, rec in items:
            country = _location_of(rec, world.cfg.accounts)
            if country is None or country not in wanted:
                continue
            if ts < org_first.get(country, world.t1):
                org_first[country] = ts
            arn = rec["userIdentity"].get("arn")
            if arn in principals and ts < principal_first.get((arn, country), world.t1):
                principal_first[(arn, country)] = ts
    for inc in out:
        first, c = inc["first_event"], inc["country"]
        inc["country_new_to_org"] = org_first[c] >= first
        inc["country_new_to_principal"] = all(
            principal_first.get((arn, c), world.t1) >= first for arn in inc["principal_arns"]
        )
        for k in ("first_event", "last_event", "first_delivery"):
            inc[k] = _iso(inc[k])
    out.sort(key=lambda inc: (inc["first_event"], inc["id"]))
    return tuple(out)


def incidents(sim: Simulation) -> list[dict[str, Any]]:
    """Ground-truth incidents (attacks and benign episodes), as in ``ground_truth()["incidents"]``."""
    return [json.loads(json.dumps(inc)) for inc in sim.incidents]


# ----------------------------------------------------------------------------------------------------------
# Delivery
# ----------------------------------------------------------------------------------------------------------
def _prefix(cfg: SimulationConfig, account: str, kind: str, region: str, ts: int) -> str:
    org = f"{cfg.org_id}/" if cfg.org_id else ""
    return f"AWSLogs/{org}{account}/{kind}/{region}/{time.strftime('%Y/%m/%d', time.gmtime(ts))}/"


@dataclass(slots=True)
class _LogMeta:
    key: str
    delivered: int
    sha256: str
    oldest: int
    newest: int


def _deliver(world: _World) -> tuple[list[SimulatedFile], dict[tuple[str, str], list[_LogMeta]]]:
    cfg = world.cfg
    rng = world.rng("delivery")
    files: list[SimulatedFile] = []
    metas: dict[tuple[str, str], list[_LogMeta]] = {}
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    for (account, region, slot), items in sorted(world.buckets.items(), key=lambda kv: kv[0]):
        items.sort(key=lambda it: it[0])
        delivered = (slot + 1) * world.slot + rng.randint(1, 5) * 60
        world.delivered[(account, region, slot)] = delivered
        stamp = time.strftime("%Y%m%dT%H%MZ", time.gmtime(delivered))
        name = f"{account}_CloudTrail_{region}_{stamp}_{_rand(rng, _ALNUM, 16)}.json.gz"
        key = _prefix(cfg, account, "CloudTrail", region, delivered) + name
        raw = dumps({"Records": [rec for _, rec in items]}).encode()
        files.append(SimulatedFile(key=key, delivered_at=_dt(delivered), body=_gzip(raw)))
        meta = _LogMeta(key, delivered, hashlib.sha256(raw).hexdigest(), items[0][0], items[-1][0])
        metas.setdefault((account, region), []).append(meta)
    return files, metas


def _digests(world: _World, metas: dict[tuple[str, str], list[_LogMeta]]) -> list[SimulatedFile]:
    cfg = world.cfg
    home = cfg.regions[0]
    rng = world.rng("digests")
    out: list[SimulatedFile] = []
    fingerprint = _hex(rng, 32)
    last_delivery = world.t1 + world.slot + 5 * 60
    for account in cfg.accounts:
        for region in cfg.regions:
            logs = sorted(metas.get((account, region), []), key=lambda m: (m.delivered, m.key))
            prev_end, prev_key, prev_hash, prev_sig = world.t0, None, None, None
            i = 0
            for hour in range(world.t0 // _HOUR + 1, -(-last_delivery // _HOUR) + 1):
                end = hour * _HOUR + rng.randint(180, 600)
                batch: list[_LogMeta] = []
                while i < len(logs) and logs[i].delivered <= end:
                    batch.append(logs[i])
                    i += 1
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(end))
                name = f"{account}_CloudTrail-Digest_{region}_{cfg.trail_name}_{home}_{stamp}.json.gz"
                key = _prefix(cfg, account, "CloudTrail-Digest", region, end) + name
                doc = {
                    "awsAccountId": account,
                    "digestStartTime": _iso(prev_end),
                    "digestEndTime": _iso(end),
                    "digestS3Bucket": cfg.bucket,
                    "digestS3Object": key,
                    "digestPublicKeyFingerprint": fingerprint,
                    "digestSignatureAlgorithm": "SHA256withRSA",
                    "newestEventTime": _iso(max(m.newest for m in batch)) if batch else None,
                    "oldestEventTime": _iso(min(m.oldest for m in batch)) if batch else None,
                    "previousDigestS3Bucket": cfg.bucket if prev_key else None,
                    "previousDigestS3Object": prev_key,
                    "previousDigestHashValue": prev_hash,
                    "previousDigestHashAlgorithm": "SHA-256" if prev_key else None,
                    "previousDigestSignature": prev_sig,
                    "logFiles": [
                        {
                            "s3Bucket": cfg.bucket,
                            "s3Object": m.key,
                            "hashValue": m.sha256,
                            "hashAlgorithm": "SHA-256",
                            "newestEventTime": _iso(m.newest),
                            "oldestEventTime": _iso(m.oldest),
                        }
                        for m in batch
                    ],
                }
                raw = json.dumps(doc, separators=(",", ":")).encode()
                out.append(SimulatedFile(key=key, delivered_at=_dt(end), body=_gzip(raw)))
                prev_end, prev_key, prev_hash, prev_sig = (
                    end,
                    key,
                    hashlib.sha256(raw).hexdigest(),
                    _hex(rng, 512),
                )
    return out


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------
def simulate(config: SimulationConfig) -> Simulation:
    """Simulate ``config.days`` of an organization's CloudTrail bucket. Pure and deterministic."""
    world = _World(config)
    cast_rng = world.rng("cast")
    humans: list[_HumanActor] = []
    for i in range(config.humans):
        iam_user = i % 6 == 1 or (config.humans == 1)
        humans.append(_HumanActor(world, i, iam_user, world.rng("human", i)))
    iam_names = [h.name for h in humans if h.kind == "iam_user"]
    for account in config.accounts:
        local_iam = [h.name for h in humans if h.kind == "iam_user" and h.home_account == account]
        world.res[account] = _resources(world.rng("resources", account), account, local_iam or iam_names[:1])
    roles = [_RoleActor(world, i) for i in range(config.automation_roles)]
    hires = [
        _HumanActor(world, i, False, world.rng("human", i), country=hire.country, profile=hire.profile)  # noqa: FBT003
        for i, hire in enumerate(config.new_hires, config.humans)
    ]
    episodes = _schedule_episodes(world, humans, hires)
    for h in (*humans, *hires):
        h.run()
    for r in roles:
        r.run()
    _run_services(world, roles)
    attacks: list[PlantedAttack] = []
    if config.attack:
        victims = [h for h in humans if h.kind == "iam_user"]
        victim = cast_rng.choice(victims)
        rng = world.rng("attack", config.attack_country)
        world.tag = incident = _INCIDENT_IDS[SCENARIOS[0]][0]
        attack = _plant_attack(
            world,
            victim,
            day=config.effective_attack_day,
            country=config.attack_country,
            rng=rng,
            name="stolen-iam-user-key-recon",
        )
        world.tag = None
        attacks.append(attack)
        what = f"{victim.name}'s long-term access key used from {attack.country} for ~20 minutes of recon"
        episodes.append(_Episode(incident, "attack", SCENARIOS[0], what, attack.account_id))
    avoid = {ip for h in (*humans, *hires) for ip in h.ips} | {
        ip for h in humans for trip in h.trips.values() for ip in trip.ips
    }
    for spec in config.scenarios:
        ids = tuple(
            i if i not in {e.id for e in episodes} else f"{i}-{spec.day}"
            for i in _INCIDENT_IDS[spec.scenario]
        )
        for ep, attack in _Planter(world, spec, humans[spec.victim], ids, avoid, humans).plant():
            episodes.append(ep)
            attacks.append(attack)
    files, metas = _deliver(world)
    if config.digests:
        files.extend(_digests(world, metas))
    files.sort(key=lambda f: (f.delivered_at, f.key))
    return Simulation(
        config=config,
        files=files,
        attacks=attacks,
        events_count=world.count,
        humans=tuple(h.public() for h in (*humans, *hires)),
        automation=tuple(r.public() for r in roles),
        incidents=_measure_incidents(world, episodes),
    )


def _schedule_episodes(world: _World, humans: list[_HumanActor], hires: list[_HumanActor]) -> list[_Episode]:
    """Hand trips, crossovers and start days to the humans; the episodes they will produce."""
    cfg = world.cfg
    base = world.t0 // _DAY  # epoch day of the first simulated day
    episodes: list[_Episode] = []
    homes = {ip for h in (*humans, *hires) for ip in h.ips}
    for k, spec in enumerate(cfg.travels, 1):
        h, tag = humans[spec.human], f"travel-{k}"
        rng = world.rng("travel", k, spec.human, spec.country)
        ips = _pick_ips(rng, spec.country, rng.randint(1, 2), homes)  # hotel, then a local SIM card
        trip = _Trip(rng.choice(_UTC_OFFSETS[spec.country]) * 60, ips, [4.0, 5.0][: len(ips)], tag)
        homes.update(ips)
        for d in range(spec.start_day, spec.start_day + spec.days):
            h.trips[base + d] = trip
        what = f"{h.name} (lives in {h.country}) works from {spec.country} for {spec.days} days"
        episodes.append(_Episode(tag, "travel", "travel", what, h.home_account))
    for k, (hire, h) in enumerate(zip(cfg.new_hires, hires, strict=True), 1):
        h.start_day, h.hire_tag = base + hire.start_day, f"new-hire-{k}"
        what = f"{h.name}, a remote {hire.profile} in {hire.country}, starts on day {hire.start_day}"
        episodes.append(_Episode(h.hire_tag, "new_hire", "new_hire", what, h.home_account))
    for k, cross in enumerate(cfg.crossovers, 1):
        h, tag = humans[cross.human], f"crossover-{k}"
        h.crossovers[base + cross.day] = (cross.kind, tag)
        work = (
            "runs the Terraform deploy"
            if cross.kind == "terraform-deploy"
            else "runs the data team's queries"
        )
        what = f"{h.name} ({h.profile}, {h.country}) {work} for a day, from home"
        episodes.append(_Episode(tag, "crossover", "crossover", what, h.home_account))
    return episodes


_EVAL_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
_EVAL_ACCOUNTS = ("111122223333", "444455556666", "777788889999")
_EVAL_MIN_DAYS = 18
_EVAL_FIRST_ATTACK_DAY = 11  # after a 10-day baseline (the detector needs 7)


def eval_config(seed: int, start: datetime | None = None, days: int = 28) -> SimulationConfig:
    """The evaluation organization: 35 people, ~30,000 events/day, six attack scenarios, benign episodes.

    34 employees in the US, DE, IN, GB and BR plus one remote hire from a country where nobody works, 3
    accounts, 2 regions, 6 automation roles; three trips in the second half (one to a country where
    colleagues live), two crossovers, and all of :data:`SCENARIOS` on distinct days from day 11 on, against
    distinct victims. The seed moves the placements, victims and countries; ``days`` must be >= 18.
    """
    if days < _EVAL_MIN_DAYS:
        raise ValueError(f"the evaluation needs at least {_EVAL_MIN_DAYS} days")
    start = _EVAL_START if start is None else start
    rng = random.Random(f"trailgeo-eval/{seed}")
    humans = 34
    last = days - 1

    def weekday(day: int) -> bool:
        return (start + timedelta(days=day)).weekday() < 5

    def weekday_in(lo: int, hi: int) -> int:
        return rng.choice([d for d in range(lo, hi + 1) if weekday(d)] or [lo])

    # Victims: five IAM users (long-term keys) and one SSO platform admin, all different people.
    iam = [i for i in range(humans) if _is_iam_user(i, humans)]
    key_victims = rng.sample(iam, 5)
    admin = rng.choice([i for i in range(humans) if _human_profile(i) == "platform"])
    free = [i for i in range(humans) if i not in {*key_victims, admin}]

    def take(candidates: list[int]) -> int:
        chosen = rng.choice(candidates)
        free.remove(chosen)
        return chosen

    # Trips in the second half: A abroad (the later attacker's country), B where colleagues live, C abroad.
    half = days // 2
    abroad_a, abroad_c = rng.sample(_TRIP_COUNTRIES, 2)
    a_start, a_len = weekday_in(half, half + 1), rng.randint(2, 4)
    b_start = weekday_in(half + 1, last - 3)
    c_start = weekday_in(half + 2, last - 2)
    b_home = take([i for i in free if _human_country(i) == "US"])
    b_country = rng.choice(["DE", "IN", "GB", "BR"])
    travels = (
        TravelSpec(take(free), abroad_a, a_start, a_len),
        TravelSpec(b_home, b_country, b_start, min(rng.randint(3, 7), days - b_start)),
        TravelSpec(take(free), abroad_c, c_start, min(rng.randint(2, 7), days - c_start)),
    )
    hire = NewHireSpec(rng.choice(_HIRE_COUNTRIES), weekday_in(-(-2 * days // 3), last - 2))
    crossovers = (
        CrossoverSpec(
            take([i for i in free if _human_country(i) == "IN" and _human_profile(i) == "developer"]),
            weekday_in(_EVAL_FIRST_ATTACK_DAY - 1, last),
            "terraform-deploy",
        ),
        CrossoverSpec(
            take([i for i in free if _human_country(i) in {"DE", "GB", "BR"}]),
            weekday_in(_EVAL_FIRST_ATTACK_DAY - 1, last),
            "data-analysis",
        ),
    )
    # Attack days: the low-and-slow pair 3-5 days apart, the travel-country attack >= 3 days after trip A.
    while True:
        probe = rng.randint(_EVAL_FIRST_ATTACK_DAY, last - 3)
        gap = rng.randint(3, min(5, last - probe))
        in_travel = rng.randint(max(a_start + a_len - 1 + 3, _EVAL_FIRST_ATTACK_DAY), last)
        taken = {probe, probe + gap, in_travel}
        rest = [d for d in range(_EVAL_FIRST_ATTACK_DAY, days) if d not in taken]
        if len(taken) == 3 and len(rest) >= 4:
            break
    recon_day, admin_day, burst_day, org_day = rng.sample(rest, 4)
    never_seen = rng.sample(_ATTACK_COUNTRIES, 4)
    org_country = rng.choice([c for c in ("IN", "DE") if c != b_country])
    v_recon, v_slow, v_burst, v_travel, v_org = key_victims
    scenarios = (
        AttackSpec("stolen-key-recon-new-country", recon_day, v_recon, never_seen[0]),
        AttackSpec("hijacked-admin-persistence", admin_day, admin, never_seen[1]),
        AttackSpec("low-and-slow", probe, v_slow, never_seen[2], follow_up_days=gap),
        AttackSpec("burst", burst_day, v_burst, never_seen[3]),
        AttackSpec("attacker-in-travel-country", in_travel, v_travel, abroad_a),
        AttackSpec("attacker-in-org-country-new-to-principal", org_day, v_org, org_country),
    )
    return SimulationConfig(
        start=start,
        days=days,
        seed=seed,
        accounts=_EVAL_ACCOUNTS,
        humans=humans,
        automation_roles=8,
        attack=False,
        events_per_human_hour=110.0,
        scenarios=scenarios,
        travels=travels,
        new_hires=(hire,),
        crossovers=crossovers,
    )


def write_tree(sim: Simulation, root: Path) -> None:
    """Write every file under ``root/<key>``, as the bucket would hold it (no ground truth in the tree)."""
    made: set[Path] = set()
    for f in sim.files:
        path = root / f.key
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        path.write_bytes(f.body)


def write_ground_truth(sim: Simulation, path: Path) -> None:
    """Write :meth:`Simulation.ground_truth` as indented JSON (keep it outside the log tree)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sim.ground_truth(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
