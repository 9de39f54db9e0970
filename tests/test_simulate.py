"""Tests of the deterministic CloudTrail history simulator (trailgeo.simulate)."""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from trailgeo.simulate import (
    Simulation,
    SimulationConfig,
    emittable_ips,
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
