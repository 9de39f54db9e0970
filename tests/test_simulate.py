"""Tests of the deterministic CloudTrail history simulator (trailgeo_tools.simulate)."""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from trailgeo.core.networks import lookup_address
from trailgeo_tools.simulate import (
    _UTC_OFFSETS,
    SCENARIOS,
    AttackSpec,
    CrossoverSpec,
    NewHireSpec,
    Simulation,
    SimulationConfig,
    TravelSpec,
    emittable_ips,
    eval_config,
    incidents,
    journey_seconds,
    simulate,
    write_ground_truth,
    write_tree,
)

START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
DEFAULT = SimulationConfig(start=START)

LOG_KEY = re.compile(
    r"^AWSLogs/(?:(?P<org>o-[a-z0-9]{10,32})/)?(?P<acct>\d{12})/CloudTrail/(?P<region>[a-z]{2}-[a-z]+-\d)/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=acct)_CloudTrail_(?P=region)_(?P<stamp>\d{8}T\d{4}Z)_[A-Za-z0-9]{16}\.json\.gz$"
)
DIGEST_KEY = re.compile(
    r"^AWSLogs/(?:(?P<org>o-[a-z0-9]{10,32})/)?(?P<acct>\d{12})/CloudTrail-Digest/(?P<region>[a-z]{2}-[a-z]+-\d)/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/"
    r"(?P=acct)_CloudTrail-Digest_(?P=region)_(?P<trail>[A-Za-z0-9_.-]+)_(?P<home>[a-z]{2}-[a-z]+-\d)_"
    r"(?P<stamp>\d{8}T\d{6}Z)\.json\.gz$"
)
REQUIRED = (
    "eventVersion",
    "userIdentity",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "requestParameters",
    "responseElements",
    "eventID",
    "readOnly",
    "eventType",
    "managementEvent",
    "recipientAccountId",
    "eventCategory",
)
MAX_DELIVERY_DELAY = 5 * 60


def _time(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _records(sim: Simulation) -> list[tuple[Any, dict[str, Any]]]:
    return list(sim.records())


@pytest.fixture(scope="module")
def default_sim() -> Simulation:
    return simulate(DEFAULT)


@pytest.fixture(scope="module")
def default_records(default_sim: Simulation) -> list[tuple[Any, dict[str, Any]]]:
    return _records(default_sim)


@pytest.fixture(scope="module")
def ip_country() -> dict[str, str]:
    return {ip: country for country, ips in emittable_ips().items() for ip in ips}


# ------------------------------------------------------------------------------------------------ determinism
def test_given_same_config_when_simulated_twice_then_output_is_byte_identical() -> None:
    cfg = replace(DEFAULT, days=3)
    a, b = simulate(cfg), simulate(cfg)
    assert [(f.key, f.delivered_at, f.body) for f in a.files] == [
        (f.key, f.delivered_at, f.body) for f in b.files
    ]
    assert a.ground_truth() == b.ground_truth()
    assert a.files, "a 3-day simulation must produce files"


def test_given_a_different_seed_when_simulated_then_output_differs() -> None:
    a = simulate(replace(DEFAULT, days=3))
    b = simulate(replace(DEFAULT, days=3, seed=8))
    assert [f.body for f in a.log_files] != [f.body for f in b.log_files]
    assert (
        a.attacks[0].source_ips != b.attacks[0].source_ips
        or a.attacks[0].first_event != b.attacks[0].first_event
    )


def test_given_any_file_then_gzip_header_has_no_timestamp(default_sim: Simulation) -> None:
    for f in default_sim.files[:50]:
        assert f.body[:2] == b"\x1f\x8b"
        assert f.body[4:8] == b"\0\0\0\0", f"{f.key} carries a gzip mtime"


# ------------------------------------------------------------------------------------------------ layout
def test_given_org_config_then_log_keys_match_org_layout_and_agree_with_delivered_at(
    default_sim: Simulation,
) -> None:
    assert default_sim.files == sorted(default_sim.files, key=lambda f: (f.delivered_at, f.key))
    logs = default_sim.log_files
    assert len(logs) > 1000
    for f in logs:
        m = LOG_KEY.match(f.key)
        assert m, f.key
        assert m["org"] == DEFAULT.org_id
        assert m["acct"] in DEFAULT.accounts
        assert m["region"] in DEFAULT.regions
        assert f.delivered_at.tzinfo is not None
        assert f.delivered_at.second == 0
        assert datetime.strptime(m["stamp"], "%Y%m%dT%H%MZ").replace(tzinfo=UTC) == f.delivered_at
        assert (m["y"], m["m"], m["d"]) == (
            f"{f.delivered_at:%Y}",
            f"{f.delivered_at:%m}",
            f"{f.delivered_at:%d}",
        )
    assert len({f.key for f in default_sim.files}) == len(default_sim.files)


def test_given_single_account_config_then_keys_have_no_org_segment() -> None:
    sim = simulate(replace(DEFAULT, days=2, org_id=None, accounts=("123456789012",)))
    assert sim.log_files
    assert sim.digest_files
    for f in sim.files:
        m = LOG_KEY.match(f.key) or DIGEST_KEY.match(f.key)
        assert m, f.key
        assert m["org"] is None
        assert f.key.startswith("AWSLogs/123456789012/")


def test_given_digests_enabled_then_hourly_digests_cover_every_log_file_once(default_sim: Simulation) -> None:
    digests = default_sim.digest_files
    assert digests
    per_stream: Counter[tuple[str, str]] = Counter()
    covered: list[str] = []
    for f in digests:
        m = DIGEST_KEY.match(f.key)
        assert m, f.key
        assert "/CloudTrail/" not in f.key
        assert m["trail"] == DEFAULT.trail_name
        assert m["home"] == DEFAULT.regions[0]
        assert datetime.strptime(m["stamp"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) == f.delivered_at
        per_stream[(m["acct"], m["region"])] += 1
        doc = json.loads(gzip.decompress(f.body))
        assert "Records" not in doc
        assert doc["awsAccountId"] == m["acct"]
        assert doc["digestS3Object"] == f.key
        covered += [lf["s3Object"] for lf in doc["logFiles"]]
    hours = DEFAULT.days * 24
    assert set(per_stream) == {(a, r) for a in DEFAULT.accounts for r in DEFAULT.regions}
    assert all(hours <= n <= hours + 2 for n in per_stream.values()), per_stream
    assert sorted(covered) == sorted(f.key for f in default_sim.log_files)


def test_given_digests_disabled_then_only_log_files_are_emitted() -> None:
    sim = simulate(replace(DEFAULT, days=1, digests=False))
    assert sim.files
    assert not sim.digest_files


# ------------------------------------------------------------------------------------------------ records
def test_given_every_record_then_it_has_cloudtrail_shape_and_belongs_to_its_file(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]]
) -> None:
    assert len(default_records) == default_sim.events_count
    ids: set[str] = set()
    slot = timedelta(minutes=DEFAULT.file_minutes)
    for f, r in default_records:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, (missing, r)
        assert r["eventVersion"] == "1.08"
        assert r["managementEvent"] is True
        assert r["eventCategory"] == "Management"
        assert r["eventType"] in {"AwsApiCall", "AwsConsoleSignIn"}
        if r["eventType"] == "AwsApiCall":
            assert r["requestID"]
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", r["eventID"]
        )
        assert r["eventID"] not in ids
        ids.add(r["eventID"])
        ident = r["userIdentity"]
        assert ident["type"] in {"AssumedRole", "IAMUser", "AWSService"}
        if ident["type"] != "AWSService":
            assert {"principalId", "arn", "accountId"} <= ident.keys()
        if ident["type"] == "AssumedRole":
            assert ident["sessionContext"]["sessionIssuer"]["type"] == "Role"
            assert ident["accessKeyId"].startswith("ASIA") or r["eventName"] == "ConsoleLogin"
        assert r["eventSource"].endswith(".amazonaws.com")
        attributes = ident.get("sessionContext", {}).get("attributes")
        if attributes:
            assert attributes["creationDate"] <= r["eventTime"], "a session cannot be used before it exists"
        m = LOG_KEY.match(f.key)
        assert m
        assert r["recipientAccountId"] == m["acct"]
        assert r["awsRegion"] == m["region"]
        t = _time(r["eventTime"])
        assert t <= f.delivered_at
        assert f.delivered_at - t <= slot + timedelta(seconds=MAX_DELIVERY_DELAY)
        assert DEFAULT.start <= t < DEFAULT.end
        ip = r["sourceIPAddress"]
        if ip.endswith(".amazonaws.com") or ip == "AWS Internal" or ipaddress.ip_address(ip).is_private:
            assert "tlsDetails" not in r or ipaddress.ip_address(ip).is_private
        else:
            assert r["tlsDetails"]["tlsVersion"].startswith("TLSv1.")


def test_given_default_sim_then_all_caller_kinds_and_some_errors_are_present(
    default_records: list[tuple[Any, dict[str, Any]]],
) -> None:
    ips = Counter[str]()
    kinds = Counter[str]()
    errors = 0
    vpce = 0
    for _, r in default_records:
        ip = r["sourceIPAddress"]
        ips[
            ip if not ip[0].isdigit() else ("private" if ipaddress.ip_address(ip).is_private else "public")
        ] += 1
        kinds[r["userIdentity"]["type"]] += 1
        errors += "errorCode" in r
        vpce += "vpcEndpointId" in r
        if "vpcEndpointId" in r:
            assert ipaddress.ip_address(r["sourceIPAddress"]).is_private
    for src in ("public", "private", "AWS Internal", "cloudtrail.amazonaws.com", "config.amazonaws.com"):
        assert ips[src] > 0, src
    assert ips["ec2.amazonaws.com"] > 0
    assert kinds["AWSService"] > 0
    assert kinds["IAMUser"] > 0
    assert kinds["AssumedRole"] > 0
    assert 0.001 < errors / len(default_records) < 0.03
    assert vpce > 0
    signins = [r for _, r in default_records if r["eventName"] == "ConsoleLogin"]
    assert signins
    assert all(r["eventType"] == "AwsConsoleSignIn" for r in signins)


def test_given_default_sim_then_every_public_source_ip_is_one_the_dbip_test_covers(
    default_records: list[tuple[Any, dict[str, Any]]], ip_country: dict[str, str]
) -> None:
    for _, r in default_records:
        ip = r["sourceIPAddress"]
        if ip.endswith(".amazonaws.com") or ip == "AWS Internal":
            continue
        if ipaddress.ip_address(ip).is_private:
            assert ip.startswith("10.")
            continue
        assert ip in ip_country, ip


# ------------------------------------------------------------------------------------------------ humans
def _human_events(sim: Simulation, records: list[tuple[Any, dict[str, Any]]]) -> dict[str, list[datetime]]:
    by_arn = {arn: h for h in sim.humans for arn in h.arns}
    attack_ids = {eid for a in sim.attacks for eid in a.event_ids}
    out: dict[str, list[datetime]] = defaultdict(list)
    for _, r in records:
        h = by_arn.get(r["userIdentity"].get("arn", ""))
        if h is not None and r["eventID"] not in attack_ids:
            out[h.name].append(_time(r["eventTime"]) + timedelta(minutes=h.utc_offset_minutes))
    return out


def test_given_humans_then_most_of_each_ones_events_are_in_local_office_hours(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]]
) -> None:
    local = _human_events(default_sim, default_records)
    assert set(local) == {h.name for h in default_sim.humans}
    off_hours = total = 0
    for name, times in local.items():
        office = sum(7 <= t.hour < 19 for t in times)
        assert office / len(times) >= 0.80, (name, office, len(times))
        off_hours += len(times) - office
        total += len(times)
    assert 0 < off_hours / total <= 0.10, "mostly office hours, yet people do sometimes work late"


def test_given_humans_then_weekends_are_much_quieter_than_weekdays(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]]
) -> None:
    weekday: Counter[str] = Counter()
    weekend: Counter[str] = Counter()
    for times in _human_events(default_sim, default_records).values():
        for t in times:
            (weekend if t.weekday() >= 5 else weekday)[t.date().isoformat()] += 1
    per_weekday = sum(weekday.values()) / 15
    per_weekend_day = sum(weekend.values()) / 6
    assert per_weekday > 1000
    assert per_weekend_day <= 0.2 * per_weekday


def test_given_humans_then_they_come_from_their_home_country_and_stable_ips(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]], ip_country: dict[str, str]
) -> None:
    humans = default_sim.humans
    countries = Counter(h.country for h in humans)
    assert countries.most_common(1)[0][0] == "US"
    assert set(countries) == {"US", "DE", "IN", "GB", "BR"}
    assert sum(h.kind == "iam_user" for h in humans) >= 2
    by_arn = {arn: h for h in humans for arn in h.arns}
    attack_ids = {eid for a in default_sim.attacks for eid in a.event_ids}
    for h in humans:
        assert 1 <= len(h.ips) <= 3
        assert all(ip_country[ip] == h.country for ip in h.ips)
    for _, r in default_records:
        h = by_arn.get(r["userIdentity"].get("arn", ""))
        if h is None or r["eventID"] in attack_ids or r["sourceIPAddress"] == "AWS Internal":
            continue
        assert r["sourceIPAddress"] in h.ips, (h.name, r["sourceIPAddress"])


def test_given_human_method_mix_then_it_is_heavy_tailed(
    default_records: list[tuple[Any, dict[str, Any]]],
) -> None:
    counts = Counter(
        f"{r['eventSource']}:{r['eventName']}"
        for _, r in default_records
        if r["userIdentity"]
        .get("sessionContext", {})
        .get("sessionIssuer", {})
        .get("userName", "")
        .startswith("AWSReservedSSO_")
    )
    total = sum(counts.values())
    top5 = sum(n for _, n in counts.most_common(5))
    assert len(counts) >= 40
    assert 0.25 <= top5 / total <= 0.8
    assert sum(n for n in counts.values() if n / total < 0.005) > 0  # a long tail exists


# ------------------------------------------------------------------------------------------------ the attack
def test_given_default_attack_then_it_happens_only_in_its_window_from_a_new_country(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]], ip_country: dict[str, str]
) -> None:
    (attack,) = default_sim.attacks
    assert attack.country == "VN"
    assert attack.access_key_id.startswith("AKIA")
    assert attack.first_event.date() == (START + timedelta(days=DEFAULT.days - 1)).date()
    assert timedelta(minutes=10) <= attack.last_event - attack.first_event <= timedelta(minutes=30)
    assert {
        "sts.amazonaws.com:GetCallerIdentity",
        "iam.amazonaws.com:ListUsers",
        "iam.amazonaws.com:ListAttachedUserPolicies",
        "s3.amazonaws.com:ListBuckets",
        "ec2.amazonaws.com:DescribeInstances",
        "ec2.amazonaws.com:DescribeRegions",
        "secretsmanager.amazonaws.com:ListSecrets",
    } == set(attack.methods)
    seen_ids: list[str] = []
    for _, r in default_records:
        ip = r["sourceIPAddress"]
        country = ip_country.get(ip)
        if country == attack.country:
            t = _time(r["eventTime"])
            assert attack.first_event <= t <= attack.last_event
            assert ip in attack.source_ips
            assert r["userIdentity"]["arn"] == attack.principal_arn
            assert r["userIdentity"]["accessKeyId"] == attack.access_key_id
            assert r["recipientAccountId"] == attack.account_id
            assert r["userAgent"] in attack.user_agents
            seen_ids.append(r["eventID"])
    assert sorted(seen_ids) == sorted(attack.event_ids)
    assert len(seen_ids) >= len(attack.methods)
    victim = next(h for h in default_sim.humans if h.access_key_id == attack.access_key_id)
    assert victim.kind == "iam_user"
    assert victim.country != attack.country
    assert all(h.country != attack.country for h in default_sim.humans)
    assert all(ip_country.get(ip, "US") == "US" for role in default_sim.automation for ip in role.ips)
    gt = default_sim.ground_truth()
    assert gt["attacks"][0]["country"] == "VN"
    assert attack.country not in gt["benign_countries"]
    json.dumps(gt)


def test_given_attack_day_and_country_then_they_are_honoured_and_attack_can_be_disabled() -> None:
    sim = simulate(replace(DEFAULT, days=4, attack_day=1, attack_country="RO"))
    (attack,) = sim.attacks
    assert attack.country == "RO"
    assert attack.first_event.date() == (START + timedelta(days=1)).date()
    assert simulate(replace(DEFAULT, days=2, attack=False)).attacks == []


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"start": datetime(2026, 11, 2)}, "UTC"),  # noqa: DTZ001 - a naive start must be rejected
        ({"start": START + timedelta(hours=3)}, "00:00"),
        ({"attack_country": "US"}, "attack_country"),
        ({"attack_day": 21}, "attack_day"),
        ({"file_minutes": 7}, "file_minutes"),
        ({"accounts": ("123",)}, "12-digit"),
    ],
)
def test_given_invalid_config_then_it_is_rejected(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(DEFAULT, **changes)


# ------------------------------------------------------------------------------------------------ volume
def test_given_default_config_then_volume_is_within_documented_range(
    default_sim: Simulation, default_records: list[tuple[Any, dict[str, Any]]]
) -> None:
    per_day = Counter(_time(r["eventTime"]).date() for _, r in default_records)
    assert len(per_day) == DEFAULT.days
    assert 3000 <= default_sim.events_count / DEFAULT.days <= 6000
    weekdays = [n for d, n in per_day.items() if d.weekday() < 5]
    weekends = [n for d, n in per_day.items() if d.weekday() >= 5]
    assert sum(weekends) / len(weekends) < 0.7 * sum(weekdays) / len(weekdays)
    assert min(per_day.values()) > 1000  # automation and services run 24/7


# ------------------------------------------------------------------------------------------------ writing
def test_given_a_simulation_when_written_then_tree_holds_only_logs_and_truth_is_separate(
    tmp_path: Path,
) -> None:
    sim = simulate(replace(DEFAULT, days=1))
    root = tmp_path / "bucket"
    write_tree(sim, root)
    write_ground_truth(sim, tmp_path / "truth" / "ground_truth.json")
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == sorted(f.key for f in sim.files)
    assert (root / sim.files[0].key).read_bytes() == sim.files[0].body
    truth = json.loads((tmp_path / "truth" / "ground_truth.json").read_text(encoding="utf-8"))
    assert truth["events_count"] == sim.events_count
    assert truth["attacks"][0]["event_ids"] == list(sim.attacks[0].event_ids)


# ------------------------------------------------------------------------------------------------ real DB-IP
def test_given_dbip_lite_database_then_every_emittable_ip_resolves_to_its_country() -> None:
    path = os.environ.get("TRAILGEO_DBIP_MMDB")
    if not path:
        if os.environ.get("CI") == "true":
            pytest.fail("TRAILGEO_DBIP_MMDB must point at dbip-country.mmdb in CI (make unit sets it)")
        pytest.skip("TRAILGEO_DBIP_MMDB is unset: point it at DB-IP Lite dbip-country.mmdb (make geoip)")
    maxminddb = pytest.importorskip("maxminddb")
    wrong: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    checked = 0
    with maxminddb.open_database(path) as db:
        for country, ips in emittable_ips().items():
            for ip in ips:
                got = db.get(ip)
                code = got.get("country_code") or got.get("country", {}).get("iso_code") if got else None
                checked += 1
                if code != country:
                    wrong[country].append((ip, code))
    assert checked > 10_000
    assert not wrong, {c: v[:5] for c, v in wrong.items()}


# ------------------------------------------------------------------------------------------ compatibility
# Pinned from the simulator as it was before incidents, trips, hires and crossovers existed: the default
# configuration must keep producing exactly these files (demo, soak test and benchmark depend on it).
DEFAULT_EVENTS = 91_762
DEFAULT_FILES = 8_956
DEFAULT_CONTENT_SHA256 = "a4d2e936c454a7fa8519ebf6d66fcd2af83f731af5408652a4d58011cdd4cf46"


def test_given_default_config_when_simulated_then_every_file_is_as_before_incidents_existed(
    default_sim: Simulation,
) -> None:
    digest = hashlib.sha256()
    for f in default_sim.files:
        digest.update(f.key.encode() + b"\n" + gzip.decompress(f.body) + b"\n")
    assert default_sim.events_count == DEFAULT_EVENTS
    assert len(default_sim.files) == DEFAULT_FILES
    assert digest.hexdigest() == DEFAULT_CONTENT_SHA256
    assert set(DEFAULT.as_json()) == {
        "start", "days", "seed", "org_id", "accounts", "regions", "humans", "automation_roles", "attack",
        "attack_day", "attack_country", "file_minutes", "events_per_human_hour", "digests", "bucket",
        "trail_name",
    }  # fmt: skip


def test_given_default_config_then_its_one_incident_is_the_classic_attack(default_sim: Simulation) -> None:
    gt = default_sim.ground_truth()
    (attack,) = gt["attacks"]
    assert attack["name"] == "stolen-iam-user-key-recon"
    assert (attack["first_event"], attack["source_ips"]) == (
        "2026-11-22T17:58:42Z",
        ["113.185.40.206", "27.72.99.94"],
    )
    (incident,) = gt["incidents"]
    assert incident == incidents(default_sim)[0]
    ids = set(attack["event_ids"])
    holding = [f.delivered_at for f, r in default_sim.records() if r["eventID"] in ids]
    assert incident == {
        "id": "attack-recon-new-country",
        "kind": "attack",
        "scenario": "stolen-key-recon-new-country",
        "description": incident["description"],
        "account_id": attack["account_id"],
        "principal_arns": [attack["principal_arn"]],
        "access_key_ids": [attack["access_key_id"]],
        "country": "VN",
        "source_ips": attack["source_ips"],
        "first_event": attack["first_event"],
        "last_event": attack["last_event"],
        "first_delivery": f"{min(holding):%Y-%m-%dT%H:%M:%SZ}",
        "events": len(ids),
        "methods": attack["methods"],
        "country_new_to_org": True,
        "country_new_to_principal": True,
    }
    assert len(holding) == len(ids)
    assert "bob" in incident["description"]


# ------------------------------------------------------------------------------------------------ eval preset
EVAL_SEED = 1
EVAL_DAYS = 18  # the shortest evaluation the preset accepts, to keep this module fast
ATTACK_IDS = {
    "attack-recon-new-country": "stolen-key-recon-new-country",
    "attack-hijacked-admin-persistence": "hijacked-admin-persistence",
    "attack-low-and-slow-probe": "low-and-slow",
    "attack-low-and-slow-exfil": "low-and-slow",
    "attack-burst": "burst",
    "attack-travel-country": "attacker-in-travel-country",
    "attack-org-country-new-to-principal": "attacker-in-org-country-new-to-principal",
}
NEVER_SEEN_IDS = (
    "attack-recon-new-country",
    "attack-hijacked-admin-persistence",
    "attack-low-and-slow-probe",
    "attack-burst",
)


class Event(NamedTuple):
    """The fields of a record the incident checks need (the full records of 18 days take gigabytes)."""

    delivered_at: datetime
    time: str
    arn: str
    key: str
    ip: str
    method: str
    account: str


@pytest.fixture(scope="module")
def eval_sim() -> Simulation:
    return simulate(eval_config(EVAL_SEED, days=EVAL_DAYS))


@pytest.fixture(scope="module")
def eval_events(eval_sim: Simulation) -> list[Event]:
    return [
        Event(
            f.delivered_at,
            r["eventTime"],
            r["userIdentity"].get("arn", ""),
            r["userIdentity"].get("accessKeyId", ""),
            r["sourceIPAddress"],
            f"{r['eventSource']}:{r['eventName']}",
            r["recipientAccountId"],
        )
        for f, r in eval_sim.records()
    ]


@pytest.fixture(scope="module")
def eval_incidents(eval_sim: Simulation) -> dict[str, dict[str, Any]]:
    found = eval_sim.ground_truth()["incidents"]
    by_id = {inc["id"]: inc for inc in found}
    assert len(by_id) == len(found), "incident ids must be unique"
    return by_id


@pytest.fixture(scope="module")
def dbip_country(dbip_mmdb: Path) -> Callable[[str], str | None]:
    """Country of a sourceIPAddress by DB-IP Lite (None for hostnames, AWS Internal and private IPs)."""
    maxminddb = pytest.importorskip("maxminddb")
    reader = maxminddb.open_database(str(dbip_mmdb))
    cache: dict[str, str | None] = {}

    def country(ip: str) -> str | None:
        if ip not in cache:
            got = None
            if ip[0].isdigit() and not ipaddress.ip_address(ip).is_private:
                got = (reader.get(ip) or {}).get("country_code")
            cache[ip] = got
        return cache[ip]

    return country


@dataclass
class Timeline:
    """First eventTime per country, per (principal ARN, country) and per (method, country), by DB-IP."""

    org: dict[str, str]
    principal: dict[tuple[str, str], str]
    method: dict[tuple[str, str], str]
    by_arn: dict[str, list[Event]]


@pytest.fixture(scope="module")
def timeline(eval_events: list[Event], dbip_country: Callable[[str], str | None]) -> Timeline:
    t = Timeline({}, {}, {}, defaultdict(list))
    for e in eval_events:
        t.by_arn[e.arn].append(e)
        c = dbip_country(e.ip)
        if c is None:
            continue
        if e.time < t.org.get(c, "~"):
            t.org[c] = e.time
        if e.time < t.principal.get((e.arn, c), "~"):
            t.principal[(e.arn, c)] = e.time
        if e.time < t.method.get((e.method, c), "~"):
            t.method[(e.method, c)] = e.time
    return t


def _day_of(sim: Simulation, when: str) -> int:
    return (_time(when) - sim.config.start).days


def test_given_eval_preset_then_it_is_a_35_person_org_of_25k_to_35k_events_per_day(
    eval_sim: Simulation, eval_events: list[Event]
) -> None:
    cfg = eval_sim.config
    per_day = Counter(e.time[:10] for e in eval_events)
    assert len(per_day) == EVAL_DAYS
    assert 25_000 <= eval_sim.events_count / EVAL_DAYS <= 35_000
    assert len(eval_sim.humans) == 35
    assert {"US", "DE", "IN", "GB", "BR"} < {h.country for h in eval_sim.humans}
    assert 2 <= len(cfg.accounts) <= 3
    assert len(cfg.regions) == 2
    assert len(eval_sim.automation) >= 3
    assert eval_sim.config.as_json()["scenarios"][0]["scenario"] in SCENARIOS


def test_given_eval_preset_then_all_six_scenarios_hit_distinct_days_victims_and_countries_after_day_10(
    eval_sim: Simulation, eval_incidents: dict[str, dict[str, Any]]
) -> None:
    attacks = {i: inc for i, inc in eval_incidents.items() if inc["kind"] == "attack"}
    assert {i: inc["scenario"] for i, inc in attacks.items()} == ATTACK_IDS
    assert {inc["scenario"] for inc in attacks.values()} == set(SCENARIOS)
    days = [_day_of(eval_sim, inc["first_event"]) for inc in attacks.values()]
    assert min(days) > 10
    assert len(set(days)) == len(days)
    probe, exfil = attacks["attack-low-and-slow-probe"], attacks["attack-low-and-slow-exfil"]
    assert 3 <= _day_of(eval_sim, exfil["first_event"]) - _day_of(eval_sim, probe["first_event"]) <= 5
    assert (probe["country"], probe["access_key_ids"]) == (exfil["country"], exfil["access_key_ids"])
    assert probe["events"] == 1
    assert probe["methods"] == ["sts.amazonaws.com:GetCallerIdentity"]
    assert 300 <= attacks["attack-burst"]["events"] <= 800
    others = [inc for i, inc in attacks.items() if i != "attack-low-and-slow-exfil"]
    assert len({inc["principal_arns"][0] for inc in others}) == 6
    assert len({inc["country"] for inc in others}) == 6
    for inc in attacks.values():
        assert len(inc["principal_arns"]) == 1
        assert len(inc["access_key_ids"]) == 1
    admin = attacks["attack-hijacked-admin-persistence"]
    assert admin["access_key_ids"][0].startswith("ASIA")
    assert "/AWSReservedSSO_AdministratorAccess_" in admin["principal_arns"][0]
    assert {
        "iam.amazonaws.com:CreateUser",
        "iam.amazonaws.com:CreateAccessKey",
        "iam.amazonaws.com:AttachUserPolicy",
        "iam.amazonaws.com:CreateLoginProfile",
        "cloudtrail.amazonaws.com:StopLogging",
    } <= set(admin["methods"])
    for i in ATTACK_IDS.keys() - {"attack-hijacked-admin-persistence"}:
        assert attacks[i]["access_key_ids"][0].startswith("AKIA")
    benign = {inc["country"] for inc in eval_incidents.values() if inc["kind"] in {"travel", "new_hire"}}
    never_seen = {attacks[i]["country"] for i in NEVER_SEEN_IDS}
    assert len(never_seen) == 4
    assert not never_seen & benign
    assert not never_seen & {h.country for h in eval_sim.humans}


def test_given_eval_preset_then_attack_flags_match_their_scenarios(
    eval_sim: Simulation, eval_incidents: dict[str, dict[str, Any]]
) -> None:
    flags = {
        i: (eval_incidents[i]["country_new_to_org"], eval_incidents[i]["country_new_to_principal"])
        for i in ATTACK_IDS
    }
    assert flags == {
        "attack-recon-new-country": (True, True),
        "attack-hijacked-admin-persistence": (True, True),
        "attack-low-and-slow-probe": (True, True),
        "attack-low-and-slow-exfil": (False, False),  # the probe brought the key there days before
        "attack-burst": (True, True),
        "attack-travel-country": (False, True),
        "attack-org-country-new-to-principal": (False, True),
    }
    in_trip = eval_incidents["attack-travel-country"]
    trips = [
        inc
        for inc in eval_incidents.values()
        if inc["kind"] == "travel"
        and inc["country"] == in_trip["country"]
        and _time(inc["last_event"]) <= _time(in_trip["first_event"]) - timedelta(days=3)
    ]
    assert trips, "scenario 5 must use a country an earlier trip visited at least 3 days before"
    assert not set(trips[0]["principal_arns"]) & set(in_trip["principal_arns"])
    assert in_trip["country"] not in {h.country for h in eval_sim.humans}
    in_org = eval_incidents["attack-org-country-new-to-principal"]
    victim = next(h for h in eval_sim.humans if in_org["principal_arns"][0] in h.arns)
    assert sum(h.country == in_org["country"] for h in eval_sim.humans) >= 3
    assert victim.country != in_org["country"]


def test_given_eval_preset_then_trips_hire_and_crossovers_are_benign_episodes_with_correct_flags(
    eval_sim: Simulation, eval_incidents: dict[str, dict[str, Any]]
) -> None:
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for inc in eval_incidents.values():
        by_kind[inc["kind"]].append(inc)
    homes = {h.country for h in eval_sim.humans if h.name not in by_kind["new_hire"][0]["description"]}
    trips = by_kind["travel"]
    assert len(trips) == 3
    assert len({t["country"] for t in trips}) == 3
    for trip in trips:
        traveller = next(h for h in eval_sim.humans if set(trip["principal_arns"]) <= set(h.arns))
        assert trip["country"] != traveller.country
        assert _day_of(eval_sim, trip["first_event"]) >= EVAL_DAYS // 2
        assert 1 <= (_time(trip["last_event"]) - _time(trip["first_event"])).days <= 7
        assert trip["country_new_to_org"] == (trip["country"] not in homes)
        assert trip["country_new_to_principal"] is True
    assert any(t["country"] not in homes for t in trips)
    assert any(t["country"] in homes for t in trips)
    (hire,) = by_kind["new_hire"]
    assert hire["country"] not in homes
    assert _day_of(eval_sim, hire["first_event"]) >= 2 * EVAL_DAYS / 3
    assert (hire["country_new_to_org"], hire["country_new_to_principal"]) == (True, True)
    assert 1 <= len(by_kind["crossover"]) <= 2
    for cross in by_kind["crossover"]:
        person = next(h for h in eval_sim.humans if set(cross["principal_arns"]) <= set(h.arns))
        assert cross["country"] == person.country
        assert (cross["country_new_to_org"], cross["country_new_to_principal"]) == (False, False)
    assert set(by_kind) == {"attack", "travel", "new_hire", "crossover"}


def test_given_eval_preset_then_every_incidents_events_are_in_the_files_as_declared(
    eval_incidents: dict[str, dict[str, Any]],
    timeline: Timeline,
    dbip_country: Callable[[str], str | None],
) -> None:
    for inc in eval_incidents.values():
        lo, hi, country = inc["first_event"], inc["last_event"], inc["country"]
        assert all(dbip_country(ip) == country for ip in inc["source_ips"]), inc["id"]
        got = [
            e
            for arn in inc["principal_arns"]
            for e in timeline.by_arn[arn]
            if lo <= e.time <= hi and dbip_country(e.ip) == country
        ]
        assert len(got) == inc["events"], inc["id"]
        assert {e.arn for e in got} == set(inc["principal_arns"])
        assert {e.key for e in got} - {""} == set(inc["access_key_ids"])
        assert {e.ip for e in got} == set(inc["source_ips"])
        assert {e.method for e in got} == set(inc["methods"])
        assert len(inc["methods"]) == len(set(inc["methods"]))
        assert f"{min(e.delivered_at for e in got):%Y-%m-%dT%H:%M:%SZ}" == inc["first_delivery"]
        assert min(e.time for e in got) == lo
        assert max(e.time for e in got) == hi
        assert {e.account for e in got} == {inc["account_id"]}, inc["id"]


def test_given_eval_preset_then_novelty_flags_agree_with_a_dbip_recount_of_all_records(
    eval_incidents: dict[str, dict[str, Any]], timeline: Timeline
) -> None:
    for inc in eval_incidents.values():
        first, c = inc["first_event"], inc["country"]
        assert inc["country_new_to_org"] == (timeline.org[c] >= first), inc["id"]
        principal_first = min(timeline.principal.get((arn, c), "~") for arn in inc["principal_arns"])
        assert inc["country_new_to_principal"] == (principal_first >= first), inc["id"]


def test_given_a_crossover_then_it_calls_methods_so_far_only_called_from_other_countries(
    eval_incidents: dict[str, dict[str, Any]], timeline: Timeline
) -> None:
    crossovers = [inc for inc in eval_incidents.values() if inc["kind"] == "crossover"]
    assert crossovers
    for cross in crossovers:
        first, home = cross["first_event"], cross["country"]
        new_here = [m for m in cross["methods"] if timeline.method.get((m, home), "~") >= first]
        seen_elsewhere = [
            m
            for m in new_here
            if any(when < first for (m2, c), when in timeline.method.items() if m2 == m and c != home)
        ]
        assert seen_elsewhere, cross["id"]


def test_given_a_trip_then_its_events_keep_office_hours_of_the_destination(
    eval_incidents: dict[str, dict[str, Any]], timeline: Timeline, dbip_country: Callable[[str], str | None]
) -> None:
    for trip in (inc for inc in eval_incidents.values() if inc["kind"] == "travel"):
        times = [
            _time(e.time)
            for arn in trip["principal_arns"]
            for e in timeline.by_arn[arn]
            if trip["first_event"] <= e.time <= trip["last_event"] and dbip_country(e.ip) == trip["country"]
        ]
        office = max(
            sum(7 <= (t + timedelta(minutes=off)).hour < 19 for t in times) / len(times)
            for off in _UTC_OFFSETS[trip["country"]]
        )
        assert office >= 0.8, (trip["id"], office)


def test_given_the_new_hire_then_all_their_activity_is_the_incident(
    eval_sim: Simulation, eval_incidents: dict[str, dict[str, Any]], timeline: Timeline
) -> None:
    (hire,) = (inc for inc in eval_incidents.values() if inc["kind"] == "new_hire")
    person = eval_sim.humans[-1]
    assert person.country == hire["country"]
    assert set(hire["principal_arns"]) <= set(person.arns)
    public = [e for arn in person.arns for e in timeline.by_arn[arn] if e.ip != "AWS Internal"]
    assert len(public) == hire["events"]
    assert min(e.time for e in public) == hire["first_event"]
    assert max(e.time for e in public) == hire["last_event"]


def test_given_eval_ground_truth_when_written_then_it_is_json_with_the_incidents(
    eval_sim: Simulation, tmp_path: Path
) -> None:
    write_ground_truth(eval_sim, tmp_path / "truth.json")
    truth = json.loads((tmp_path / "truth.json").read_text(encoding="utf-8"))
    assert truth["incidents"] == incidents(eval_sim)
    assert len(truth["attacks"]) == len(ATTACK_IDS)
    assert {a["name"] for a in truth["attacks"]} == set(ATTACK_IDS)
    assert truth["config"]["new_hires"][0]["country"] == eval_sim.humans[-1].country


# --------------------------------------------------------------------------------------- eval determinism
def test_given_same_seed_then_eval_config_is_equal_and_other_seeds_move_placements_and_victims() -> None:
    assert eval_config(1) == eval_config(1)
    configs = [eval_config(seed) for seed in (1, 2, 3)]
    placements = [tuple((a.day, a.victim, a.country) for a in cfg.scenarios) for cfg in configs]
    assert len(set(placements)) == 3
    victims = [tuple(a.victim for a in cfg.scenarios) for cfg in configs]
    assert len(set(victims)) == 3
    days = [tuple(a.day for a in cfg.scenarios) for cfg in configs]
    assert len(set(days)) == 3


def test_given_a_light_eval_config_when_simulated_twice_then_bytes_and_incidents_are_identical() -> None:
    light = replace(eval_config(2, days=EVAL_DAYS), events_per_human_hour=4.0, automation_roles=0)
    a, b = simulate(light), simulate(light)
    assert [(f.key, f.body) for f in a.files] == [(f.key, f.body) for f in b.files]
    assert a.incidents == b.incidents
    assert len(a.incidents) == len(ATTACK_IDS) + 3 + 1 + 2
    other = simulate(replace(light, seed=3))
    assert [f.body for f in a.log_files] != [f.body for f in other.log_files]


def test_given_too_few_days_then_the_eval_preset_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least"):
        eval_config(1, days=10)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"scenarios": (AttackSpec("phishing", 3, 1, "VN"),)}, "unknown scenario"),
        ({"scenarios": (AttackSpec("burst", 3, 0, "VN"),)}, "IAM user"),
        ({"scenarios": (AttackSpec("hijacked-admin-persistence", 3, 1, "VN"),)}, "SSO user"),
        ({"scenarios": (AttackSpec("low-and-slow", 18, 1, "VN", follow_up_days=4),)}, "day outside"),
        ({"scenarios": (AttackSpec("burst", 3, 1, "XX"),)}, "no IP prefixes"),
        ({"travels": (TravelSpec(0, "US", 3, 2),)}, "travel country"),
        ({"travels": (TravelSpec(0, "FR", 20, 2),)}, "outside"),
        ({"new_hires": (NewHireSpec("PL", 3, "sales"),)}, "new hire"),
        ({"crossovers": (CrossoverSpec(4, 3, "golf"),)}, "crossover"),
    ],
)
def test_given_invalid_episode_specs_then_the_config_is_rejected(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(DEFAULT, **changes)


def test_given_a_trip_then_the_traveller_works_abroad_no_sooner_than_a_flight_after_home_and_back(
    eval_sim: Simulation, eval_events: list[Event], eval_incidents: dict[str, dict[str, Any]]
) -> None:
    """Travellers take flights: a journey's time between their last call at home and their first
    abroad, and the same back (never a move at the trip's first local midnight)."""
    # Given each trip, and each traveller's own calls from public addresses, in order
    trips = [inc for inc in eval_incidents.values() if inc["kind"] == "travel"]
    attack_ips = {
        ip for inc in eval_incidents.values() if inc["kind"] == "attack" for ip in inc["source_ips"]
    }
    assert trips
    for trip in trips:
        traveller = next(h for h in eval_sim.humans if trip["principal_arns"][0] in h.arns)
        calls = sorted(
            _time(e.time)
            for e in eval_events
            if e.arn in traveller.arns and e.ip not in attack_ips and lookup_address(e.ip) is not None
        )
        first, last = _time(trip["first_event"]), _time(trip["last_event"])
        journey = timedelta(seconds=journey_seconds(traveller.country, trip["country"]))

        # Then the calls around the trip are a journey away from it
        before = [t for t in calls if t < first]
        after = [t for t in calls if t > last]
        assert before
        assert first - before[-1] >= journey, trip["id"]
        if after:
            assert after[0] - last >= journey, trip["id"]
