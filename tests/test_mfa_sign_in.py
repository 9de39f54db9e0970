"""The sign-in evidence: a person's sign-ins with a security key or passkey (core/sign_ins.py), the
``SI#`` counters, core/evidence.MFA_SIGN_IN and the alerts it holds back; every Identity Center
sign-in, the ``SS#`` counters and core/evidence.SESSION_ELSEWHERE (a session used from where its
person did not sign in)."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.builders import ACCOUNT, ALICE, files_by_delivery, record, trail_record, write_tree
from trailgeo.adapters.local import JsonLinesAlertSink
from trailgeo.adapters.memory import MemoryGeoResolver
from trailgeo.app.detect import RunOptions
from trailgeo.app.replay import replay
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.alerts import Severity
from trailgeo.core.evidence import (
    FACTORS,
    MFA_SIGN_IN_REASON,
    REGISTRY,
    SIGN_IN_HOURS,
    evidenced_severity,
    session_evidence,
    sign_in_evidence,
)
from trailgeo.core.networks import AsnInfo
from trailgeo.core.scoring import ScoringPolicy
from trailgeo.core.sign_ins import (
    MAX_WORKFLOWS,
    SIGN_IN_SKIP,
    UNREADABLE_SIGN_IN,
    SignIn,
    SignInReader,
    sign_in_network,
)

CLI_V2 = "aws-cli/2.15.30 Python/3.11.8 Linux/6.5 exe/x86_64.ubuntu.22"
PYTHON_SDK = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.5 md/arch#x86_64 lang/python#3.12.1"
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/130.0 Safari/537.36"
USER = "alice@example.com"
SSO_ALICE = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Developer_0123456789abcdef/{USER}"
DE_IP = "91.0.0.1"
HOTEL_IP = "202.248.0.1"  # a hotel's line in Japan (NTT)
HOTEL_PHONE_IP = "202.248.7.9"  # the phone beside it: another address of the same network
OTHER_JP_IP = "210.130.0.1"  # another network in Japan (IIJ)
NTT = AsnInfo(4713, "NTT Communications Corporation")
IIJ = AsnInfo(2497, "Internet Initiative Japan Inc.")
TELEKOM = AsnInfo(3320, "Deutsche Telekom AG")
AMAZON = AsnInfo(16509, "Amazon.com, Inc.")
TOKYO_GATEWAY_IP = "13.112.0.1"  # the company's VPN gateway on EC2 in ap-northeast-1
TOKYO_EC2_IP = "13.113.0.1"  # another EC2 instance there: anyone's for rent
AT_TELEKOM_IP = "91.0.9.9"  # alice's own home line (Telekom) on a day the database places it in Austria
JP_HOME_IPS = ("210.130.1.1", "210.130.2.1", "210.130.3.1")  # colleagues' home lines in Japan (IIJ)
MONDAY = datetime(2026, 10, 5, tzinfo=UTC)
# Tuesday of the fourth week, 10:00 in Tokyo (01:00 UTC): a traveller's working morning.
TRIP = datetime(2026, 10, 27, 1, 0, tzinfo=UTC)


def _geo(*, asn: bool = True) -> MemoryGeoResolver:
    return MemoryGeoResolver(
        countries={
            DE_IP: "DE",
            HOTEL_IP: "JP",
            HOTEL_PHONE_IP: "JP",
            OTHER_JP_IP: "JP",
            TOKYO_GATEWAY_IP: "JP",
            TOKYO_EC2_IP: "JP",
            AT_TELEKOM_IP: "AT",
            **dict.fromkeys(JP_HOME_IPS, "JP"),
        },
        networks={
            DE_IP: TELEKOM,
            HOTEL_IP: NTT,
            HOTEL_PHONE_IP: NTT,
            OTHER_JP_IP: IIJ,
            TOKYO_GATEWAY_IP: AMAZON,
            TOKYO_EC2_IP: AMAZON,
            AT_TELEKOM_IP: TELEKOM,
            **dict.fromkeys(JP_HOME_IPS, IIJ),
        }
        if asn
        else None,
    )


def _sso_identity() -> dict[str, Any]:
    return {
        "type": "AssumedRole",
        "principalId": f"AROAEXAMPLEID0000001:{USER}",
        "arn": SSO_ALICE,
        "accountId": ACCOUNT,
        "accessKeyId": "ASIAEXAMPLE000000001",
    }


def _calls(ip: str, at: datetime, *, agent: str = CLI_V2, n: int = 3) -> list[dict[str, Any]]:
    return [
        record(at + timedelta(minutes=m), ip=ip, arn=SSO_ALICE, agent=agent, userIdentity=_sso_identity())
        for m in range(n)
    ]


def _working_weeks() -> list[dict[str, Any]]:
    """alice's calls from Germany on 15 weekdays, 09:00 to 17:00 German time."""
    days = [MONDAY + timedelta(days=d) for d in range(19) if (MONDAY + timedelta(days=d)).weekday() < 5]
    return [
        c
        for day in days
        for h in range(8, 16)
        for c in _calls(DE_IP, day + timedelta(hours=h, minutes=5), n=1)
    ]


def _identity_center(
    at: datetime,
    ip: str,
    *,
    factor: str = "WEBAUTHN",
    user: str = USER,
    workflow: str = "9de74b32-8362-4a01-a524-de21df59fd83",
    outcome: str = "Success",
    ips: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """One Identity Center sign-in as CloudTrail writes it: the password's challenge (naming the
    user), its verification, the second factor's challenge and verification, ``UserAuthentication``
    (only when every factor succeeded); ``ips``: a different address for each record."""
    who = {
        "type": "IdentityCenterUser",
        "arn": "",
        "accountId": ACCOUNT,
        "accessKeyId": "",
        "onBehalfOf": {"userId": "94482488-3041-7026-18f3-be45837cd0e4", "identityStoreArn": "arn:..."},
    }
    steps: list[tuple[str, dict[str, str], dict[str, str] | None]] = [
        ("CredentialChallenge", {"CredentialType": "PASSWORD", "UserName": user}, None),
        ("CredentialVerification", {"CredentialType": "PASSWORD"}, {"CredentialVerification": "Success"}),
        ("CredentialChallenge", {"CredentialType": factor}, None),
        ("CredentialVerification", {"CredentialType": factor}, {"CredentialVerification": outcome}),
    ]
    if outcome == "Success":
        steps.append(
            (
                "UserAuthentication",
                {"CredentialType": f"PASSWORD,{factor}"},
                {"UserAuthentication": "Success"},
            )
        )
    found = []
    for n, (name, details, service) in enumerate(steps):
        body = record(
            at + timedelta(seconds=5 * n),
            name=name,
            source="signin.amazonaws.com",
            ip=ips[n] if ips else ip,
            agent=BROWSER,
            userIdentity=who,
            eventType="AwsServiceEvent",
            additionalEventData={
                "AuthWorkflowID": workflow,
                "LoginTo": "https://d-1.awsapps.com/start/",
                **details,
            },
        )
        if service is not None:
            body["serviceEventDetails"] = service
        found.append(body)
    return found


def _console_login(at: datetime, ip: str, *, mfa: str, outcome: str = "Success") -> dict[str, Any]:
    return record(
        at,
        name="ConsoleLogin",
        source="signin.amazonaws.com",
        ip=ip,
        agent=BROWSER,
        key="",
        eventType="AwsConsoleSignIn",
        responseElements={"ConsoleLogin": outcome},
        additionalEventData={
            "LoginTo": "https://console.aws.amazon.com/",
            "MFAUsed": "Yes",
            "MFAIdentifier": mfa,
        },
    )


def _read(
    records: list[dict[str, Any]], geo: MemoryGeoResolver | None = None
) -> tuple[list[SignIn], RunAggregate]:
    resolver = geo or _geo()
    aggregate = RunAggregate(geolocate=resolver.country)
    aggregate.add_records([trail_record(r) for r in records])
    return aggregate.sign_in_reader.sign_ins(), aggregate


def _replayed(
    tmp_path: Path, records: list[dict[str, Any]], options: RunOptions | None = None, *, asn: bool = True
) -> tuple[list[dict[str, Any]], Counter[str]]:
    write_tree(tmp_path, files_by_delivery(records))
    out, held = io.StringIO(), Counter[str]()
    replay(
        tmp_path,
        _geo(asn=asn),
        JsonLinesAlertSink(out),
        options or RunOptions(),
        on_tick=lambda r: held.update(r.alerts_allowlisted),
    )
    return [json.loads(line) for line in out.getvalue().splitlines()], held


# ---------------------------------------------------------------------------- reading sign-ins


def test_given_an_identity_center_sign_in_with_a_security_key_then_it_names_the_user_where_and_when() -> None:
    # Given alice's sign-in from the hotel with her security key
    at = TRIP - timedelta(minutes=30)

    # When read
    sign_ins, aggregate = _read(_identity_center(at, HOTEL_IP))

    # Then one sign-in, hers, from the hotel, at its UserAuthentication; its five records are
    # evidence, not calls (no made-up principal "IdentityCenterUser" gets a history)
    assert sign_ins == [
        SignIn(f"sso:{USER}", HOTEL_IP, "JP", "2026-10-27T00:30:20Z", "WEBAUTHN (Identity Center)")
    ]
    assert aggregate.skipped[SIGN_IN_SKIP] == 5
    assert aggregate.groups == {}


@pytest.mark.parametrize(
    ("records", "why"),
    [
        (_identity_center(TRIP, HOTEL_IP, factor="TOTP"), "a one-time code is relayed by a phishing page"),
        (_identity_center(TRIP, HOTEL_IP, factor="SMS"), "so is a text message"),
        (_identity_center(TRIP, HOTEL_IP, outcome="Failure"), "the key was not verified: nobody signed in"),
        (_identity_center(TRIP, HOTEL_IP)[1:], "no challenge named the user (split across two runs)"),
        (_identity_center(TRIP, HOTEL_IP)[:-1], "no UserAuthentication: not signed in"),
        (
            _identity_center(TRIP, HOTEL_IP, ips=(HOTEL_IP, HOTEL_IP, HOTEL_IP, HOTEL_IP, OTHER_JP_IP)),
            "one sign-in from two addresses",
        ),
        (
            _identity_center(TRIP, HOTEL_IP, user="alice\n[critical] all clear"),
            "a user name no directory holds",
        ),
    ],
)
def test_given_a_sign_in_without_a_phishing_resistant_factor_completed_then_it_vouches_for_nothing(
    records: list[dict[str, Any]], why: str
) -> None:
    sign_ins, _ = _read(records)
    assert [s for s in sign_ins if s.phishing_resistant] == [], why


@pytest.mark.parametrize("factor", ["TOTP", "SMS"])
def test_given_a_sign_in_with_a_one_time_code_then_it_is_kept_as_where_sessions_began_vouching_for_nothing(
    factor: str,
) -> None:
    # Given alice's sign-in from the hotel with a one-time code
    sign_ins, _ = _read(_identity_center(TRIP, HOTEL_IP, factor=factor))

    # Then it is hers, from the hotel (where her sessions begin), and not phishing-resistant
    assert sign_ins == [
        SignIn(
            f"sso:{USER}",
            HOTEL_IP,
            "JP",
            "2026-10-27T01:00:20Z",
            f"{factor} (Identity Center)",
            phishing_resistant=False,
        )
    ]


def test_given_an_external_identity_provider_then_its_factor_is_unknown_and_vouches_for_nothing() -> None:
    # Given a sign-in through Okta: one UserAuthentication naming the user
    body = _identity_center(TRIP, HOTEL_IP)[-1]
    body["additionalEventData"] = {
        "AuthWorkflowID": "w-1",
        "UserName": USER,
        "CredentialType": "EXTERNAL_IDP",
    }

    # Then nothing: the trail does not say which factor the provider asked for
    assert _read([body])[0] == []


def test_given_iam_console_logins_then_only_a_security_key_that_succeeded_vouches() -> None:
    key = f"arn:aws:iam::{ACCOUNT}:u2f/user/alice/default-AAAAAAAABBBBBBBBCCCCCCCCDD"
    app = f"arn:aws:iam::{ACCOUNT}:mfa/alice"
    records = [
        _console_login(TRIP, HOTEL_IP, mfa=key),
        _console_login(TRIP + timedelta(minutes=1), OTHER_JP_IP, mfa=app),
        _console_login(TRIP + timedelta(minutes=2), DE_IP, mfa=key, outcome="Failure"),
    ]

    sign_ins, aggregate = _read(records)

    # Then the security key's success only; each ConsoleLogin is still counted as a call of alice's
    assert sign_ins == [SignIn(ALICE, HOTEL_IP, "JP", "2026-10-27T01:00:00Z", "security key (IAM user)")]
    assert sum(a.events for g in aggregate.groups.values() for a in g.methods.values()) == 3


def test_given_sign_in_details_that_do_not_decode_then_counted_and_the_record_kept() -> None:
    # Given a ConsoleLogin whose additionalEventData is a string, not an object
    body = _console_login(TRIP, HOTEL_IP, mfa="x")
    body["additionalEventData"] = "MFAUsed=Yes"

    sign_ins, aggregate = _read([body])

    assert sign_ins == []
    assert aggregate.skipped[UNREADABLE_SIGN_IN] == 1
    assert sum(a.events for g in aggregate.groups.values() for a in g.methods.values()) == 1  # still a call


def test_given_a_flood_of_challenges_then_the_workflows_followed_are_bounded() -> None:
    """Anyone may type any user name at the sign-in page: each attempt is a workflow."""
    reader = SignInReader()
    for n in range(MAX_WORKFLOWS + 50):
        (challenge,) = _identity_center(TRIP, HOTEL_IP, workflow=f"w-{n}")[:1]
        reader.add(trail_record(challenge), HOTEL_IP, "JP", "2026-10-27T01:00:00Z")
    assert len(reader._workflows) == MAX_WORKFLOWS


def test_given_a_workers_sign_ins_when_its_snapshot_is_merged_then_the_reduce_has_them() -> None:
    _, worker = _read(_identity_center(TRIP, HOTEL_IP))
    reduce = RunAggregate(geolocate=_geo().country)
    reduce.merge_snapshot(worker.snapshot())
    assert reduce.sign_in_reader.sign_ins() == worker.sign_in_reader.sign_ins() != []
    assert reduce.skipped[SIGN_IN_SKIP] == 5


@pytest.mark.parametrize(
    ("address", "asn", "network"),
    [
        (HOTEL_IP, NTT, "JP/AS4713"),
        (TOKYO_GATEWAY_IP, AMAZON, f"JP/{TOKYO_GATEWAY_IP}"),  # a cloud address vouches for itself alone
        (HOTEL_IP, None, "JP/202.248.0.0/24"),  # no ASN database, or an address it lacks
        ("2001:218:4:1::7", None, "JP/2001:218:4::/48"),
        ("::ffff:202.248.0.1", None, "JP/202.248.0.0/24"),
        ("10.0.0.1", None, None),
        ("signin.amazonaws.com", 16509, None),
    ],
)
def test_given_an_address_then_its_sign_in_network(
    address: str, asn: int | None, network: str | None
) -> None:
    assert sign_in_network(address, "JP", (lambda _: asn) if asn is not None else None) == network


# ---------------------------------------------------------------------------- the factor


def test_given_the_registry_then_the_sign_in_is_shown_and_weighs_nothing() -> None:
    assert "mfa_sign_in" in FACTORS
    assert REGISTRY["mfa_sign_in"].raises == 0


def test_given_sign_in_hours_when_judged_then_only_the_alerts_hours_and_the_twelve_before_count() -> None:
    hour = 500_000
    networks = {HOTEL_IP: "JP/AS4713", HOTEL_PHONE_IP: "JP/AS4713"}
    assert sign_in_evidence(networks, {"JP/AS4713": {hour - SIGN_IN_HOURS}}, {hour, hour + 1}) is not None
    assert sign_in_evidence(networks, {"JP/AS4713": {hour + 1}}, {hour, hour + 1}) is not None
    assert sign_in_evidence(networks, {"JP/AS4713": {hour - SIGN_IN_HOURS - 1}}, {hour}) is None
    assert sign_in_evidence(networks, {"JP/AS4713": {hour + 2}}, {hour, hour + 1}) is None  # after the calls
    # every address must be vouched for: one from another network leaves the alert unexplained
    both = {HOTEL_IP: "JP/AS4713", OTHER_JP_IP: "JP/AS2497"}
    assert sign_in_evidence(both, {"JP/AS4713": {hour}}, {hour}) is None
    assert sign_in_evidence({"x": None}, {"JP/AS4713": {hour}}, {hour}) is None


# ---------------------------------------------------------------------------- end to end


def test_given_a_traveller_who_signed_in_at_her_hotel_with_her_key_then_her_calls_are_held(
    tmp_path: Path,
) -> None:
    # Given alice's weeks in Germany, then in Tokyo: her sign-in with her key at the hotel, and
    # calls from the hotel and from her phone on the same network
    trip = (
        _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP)
        + _calls(HOTEL_IP, TRIP)
        + _calls(HOTEL_PHONE_IP, TRIP + timedelta(minutes=40))
    )

    # When replayed
    alerts, held = _replayed(tmp_path, _working_weeks() + trip)

    # Then no alert: held back, counted
    assert alerts == []
    assert held[MFA_SIGN_IN_REASON] >= 1


def test_given_the_same_trip_without_the_sign_in_then_it_alerts(tmp_path: Path) -> None:
    """The control: what the factor holds back is an alert."""
    (alert,), held = _replayed(tmp_path, _working_weeks() + _calls(HOTEL_IP, TRIP))
    assert (alert["location"], alert["severity"]) == ("JP", "medium")
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_the_factor_turned_off_when_replayed_then_the_trip_alerts(tmp_path: Path) -> None:
    trip = _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP) + _calls(HOTEL_IP, TRIP)
    options = RunOptions(factors=FACTORS - {"mfa_sign_in"})
    (alert,), held = _replayed(tmp_path, _working_weeks() + trip, options)
    assert alert["location"] == "JP"
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_her_session_hijacked_from_japan_while_she_signs_in_at_home_then_it_alerts(
    tmp_path: Path,
) -> None:
    # Given alice signing in with her key in Germany every morning, and her session's calls from Japan
    home = [
        s
        for d in (20, 21, 22, 23, 26, 27)
        for s in _identity_center(datetime(2026, 10, d, 7, 0, tzinfo=UTC), DE_IP, workflow=f"w-{d}")
    ]
    attack = _calls(OTHER_JP_IP, TRIP)

    # When replayed
    alerts, held = _replayed(tmp_path, _working_weeks() + home + attack)

    # Then the attack alerts: her key vouches for where she is, not for where her session is used
    (alert,) = alerts
    assert alert["location"] == "JP"
    assert "mfa_sign_in" not in [e["factor"] for e in alert["evidence"]]
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_an_attacker_who_phished_her_one_time_code_and_signed_in_from_japan_then_it_alerts(
    tmp_path: Path,
) -> None:
    """An adversary-in-the-middle page relays the password and the code from the attacker's address."""
    attack = _identity_center(TRIP - timedelta(minutes=5), OTHER_JP_IP, factor="TOTP") + _calls(
        OTHER_JP_IP, TRIP
    )
    (alert,), held = _replayed(tmp_path, _working_weeks() + attack)
    assert alert["location"] == "JP"
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_an_attacker_on_another_network_of_the_country_she_signed_in_from_then_it_alerts(
    tmp_path: Path,
) -> None:
    """Learning from the trail that she is in Japan, a thief calls from a Japanese address of their own."""
    trip = _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP) + _calls(OTHER_JP_IP, TRIP)
    (alert,), _ = _replayed(tmp_path, _working_weeks() + trip)
    assert alert["location"] == "JP"
    assert [e["factor"] for e in alert["evidence"]] == []


def test_given_she_signed_in_through_a_cloud_gateway_when_a_thief_rents_the_next_instance_then_not_hers(
    tmp_path: Path,
) -> None:
    """A cloud provider's AS is no network one is at: anyone rents an instance in it."""
    # Given alice signing in through the company's VPN gateway on EC2 in Tokyo, and her session's
    # calls from another EC2 instance there
    trip = _identity_center(TRIP - timedelta(minutes=20), TOKYO_GATEWAY_IP) + _calls(TOKYO_EC2_IP, TRIP)

    # When replayed
    (alert,), held = _replayed(tmp_path, _working_weeks() + trip)

    # Then the alert has the rented server and no sign-in beside it
    assert [e["factor"] for e in alert["evidence"]] == ["hosting_provider"]
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_no_asn_database_then_the_sign_in_vouches_for_its_own_slash_24_only(tmp_path: Path) -> None:
    # Given her sign-in at the hotel (202.248.0.1) and calls from the phone (202.248.7.9: another /24)
    trip = _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP) + _calls(HOTEL_PHONE_IP, TRIP)
    alerts, _ = _replayed(tmp_path, _working_weeks() + trip, asn=False)
    assert [a["location"] for a in alerts] == ["JP"]
    # and from the hotel's own address, held
    other = tmp_path / "second"
    alerts, held = _replayed(
        other, _working_weeks() + _identity_center(TRIP, HOTEL_IP) + _calls(HOTEL_IP, TRIP), asn=False
    )
    assert alerts == []
    assert held[MFA_SIGN_IN_REASON] >= 1


def test_given_a_sign_in_thirteen_hours_before_the_calls_then_it_no_longer_vouches(tmp_path: Path) -> None:
    """The sign-in read by an earlier run: its hour comes from the ``SI#`` counters."""
    trip = _identity_center(TRIP - timedelta(hours=13), HOTEL_IP) + _calls(HOTEL_IP, TRIP)
    (alert,), _ = _replayed(tmp_path, _working_weeks() + trip)
    assert alert["location"] == "JP"


def test_given_a_sign_in_read_by_an_earlier_run_within_the_hours_then_it_vouches(tmp_path: Path) -> None:
    trip = _identity_center(TRIP - timedelta(hours=5), HOTEL_IP) + _calls(HOTEL_IP, TRIP)
    alerts, held = _replayed(tmp_path, _working_weeks() + trip)
    assert alerts == []
    assert held[MFA_SIGN_IN_REASON] >= 1


def test_given_a_signed_in_traveller_with_a_client_she_never_ran_then_it_still_alerts_showing_both(
    tmp_path: Path,
) -> None:
    # Given her sign-in at the hotel, then calls from there with a client she never used
    trip = _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP) + _calls(HOTEL_IP, TRIP, agent=PYTHON_SDK)

    # When replayed
    (alert,), held = _replayed(tmp_path, _working_weeks() + trip)

    # Then the raising evidence alerts; the sign-in is shown beside it and weighs nothing
    factors = {e["factor"]: e["raises"] for e in alert["evidence"]}
    assert factors == {"new_client": 1, "mfa_sign_in": 0}
    assert alert["severity"] == "high"
    assert "signed in there with a security key" in alert["explanation"]
    assert held[MFA_SIGN_IN_REASON] == 0


def test_given_a_role_session_from_the_network_she_signed_in_from_then_the_sign_in_is_hers_only(
    tmp_path: Path,
) -> None:
    """A role is whoever assumes it: a person's sign-in vouches for that person's calls alone."""
    role = f"arn:aws:sts::{ACCOUNT}:assumed-role/Deployer/ci-run-1"
    history = [
        record(MONDAY + timedelta(days=d, hours=h), ip=DE_IP, arn=role)
        for d in range(19)
        for h in range(8, 16)
    ]
    trip = _identity_center(TRIP - timedelta(minutes=20), HOTEL_IP) + [
        record(TRIP + timedelta(minutes=m), ip=HOTEL_IP, arn=role) for m in range(3)
    ]
    alerts, _ = _replayed(tmp_path, history + trip)
    assert [(a["aws"]["cloudtrail"]["user_identity"]["arn"], a["location"]) for a in alerts] == [(role, "JP")]


def test_given_run_options_then_the_factor_is_on_by_default() -> None:
    assert "mfa_sign_in" in RunOptions().factors


# ---------------------------------------------------------------------------- session begun elsewhere

# alice signs in at home in Germany (with a one-time code, as a third of the staff do) in the
# evening, and nine hours later her portal session's role credentials are used from Japan: long
# enough to have flown there (impossible travel would otherwise speak too, as it does two hours
# after: see the end).
HOME_SIGN_IN = TRIP - timedelta(hours=9)


def _home_sign_in(factor: str = "TOTP", ip: str = DE_IP) -> list[dict[str, Any]]:
    return _identity_center(HOME_SIGN_IN, ip, factor=factor, workflow="w-home")


def _factors(alert: dict[str, Any]) -> list[str]:
    return [e["factor"] for e in alert["evidence"]]


def test_given_the_registry_then_a_session_begun_elsewhere_raises_one_level() -> None:
    assert REGISTRY["session_elsewhere"].raises == 1
    assert "session_elsewhere" in RunOptions().factors


def test_given_sign_in_hours_when_judged_then_a_sign_in_elsewhere_in_the_window_and_none_there() -> None:
    hour = 500_000
    assert session_evidence({hour - SIGN_IN_HOURS}, set(), {hour, hour + 1}, "JP") is not None
    assert (
        session_evidence({hour - SIGN_IN_HOURS - 1}, set(), {hour}, "JP") is None
    )  # the session outlived it
    assert session_evidence(set(), set(), {hour}, "JP") is None  # no sign-in on record: nothing known
    # a sign-in from the calls' country or network in the window: the person is there
    assert session_evidence({hour - 2, hour - 1}, {hour - 1}, {hour}, "JP") is None
    assert session_evidence({hour - 2}, {hour - SIGN_IN_HOURS - 3}, {hour}, "JP") is not None


@pytest.mark.parametrize(
    ("base", "factors", "expected"),
    [
        ("low", {"session_elsewhere": 1}, "medium"),
        ("medium", {"session_elsewhere": 1}, "medium"),  # alone: a look, not a page
        ("high", {"session_elsewhere": 1}, "high"),  # never lowers
        ("medium", {"session_elsewhere": 1, "new_client": 1}, "critical"),  # beside another: its level
        ("low", {"session_elsewhere": 1, "unusual_hour": 1}, "high"),
        ("medium", {"session_elsewhere": 1, "mfa_sign_in": 0}, "medium"),  # weighing nothing is no other
        ("medium", {"new_client": 1}, "high"),
    ],
)
def test_given_factors_when_a_severity_is_evidenced_then_one_that_only_corroborates_alone_stops_at_medium(
    base: Severity, factors: dict[str, int], expected: str
) -> None:
    assert evidenced_severity(base, factors) == expected


@pytest.mark.parametrize("factor", ["TOTP", "WEBAUTHN"])
def test_given_her_session_used_from_japan_nine_hours_after_she_signed_in_at_home_then_the_factor_is_shown(
    tmp_path: Path, factor: str
) -> None:
    """A stolen portal session (an infostealer's cookie, a cached token) needs no second sign-in:
    her security key does not stop it, and the trail shows where she signed in."""
    # Given alice's weeks in Germany, her sign-in at home, then her session's calls from Japan
    records = _working_weeks() + _home_sign_in(factor) + _calls(OTHER_JP_IP, TRIP)

    # When replayed
    (alert,), _ = _replayed(tmp_path, records)

    # Then the alert has the session begun elsewhere and says so; alone it stays at medium (a
    # traveller on the morning's portal session looks the same)
    assert alert["location"] == "JP"
    assert _factors(alert) == ["session_elsewhere"]
    assert alert["severity"] == "medium"
    (evidence,) = alert["evidence"]
    assert "never from JP" in evidence["text"]
    assert "alone, no higher than medium" in alert["explanation"]


def test_given_her_session_used_from_japan_with_a_client_she_never_ran_then_both_raise(
    tmp_path: Path,
) -> None:
    # Given her session's calls from Japan with a client she never ran
    records = _working_weeks() + _home_sign_in() + _calls(OTHER_JP_IP, TRIP, agent=PYTHON_SDK)

    # When replayed, with the factor and without it
    (alert,), _ = _replayed(tmp_path, records)
    (without,), _ = _replayed(
        tmp_path / "without", records, RunOptions(factors=FACTORS - {"session_elsewhere"})
    )

    # Then beside the new client the session adds its level: critical, where the client alone is high
    assert sorted(_factors(alert)) == ["new_client", "session_elsewhere"]
    assert (alert["severity"], without["severity"]) == ("critical", "high")


@pytest.mark.parametrize(
    ("records", "why"),
    [
        (
            _identity_center(TRIP - timedelta(minutes=30), HOTEL_IP, factor="TOTP", workflow="w-hotel"),
            "she signed in at the hotel: she is in Japan",
        ),
        (
            _identity_center(HOME_SIGN_IN, TOKYO_GATEWAY_IP, factor="TOTP", workflow="w-vpn"),
            "her only sign-in came through a cloud gateway: it says nothing of where she is",
        ),
        (
            _identity_center(
                TRIP - timedelta(hours=SIGN_IN_HOURS + 2), DE_IP, factor="TOTP", workflow="w-old"
            ),
            "her last sign-in is older than a working day's session",
        ),
        ([], "no sign-in on record (the trail lacks Identity Center's account)"),
    ],
)
def test_given_a_sign_in_that_does_not_place_her_elsewhere_then_no_factor(
    tmp_path: Path, records: list[dict[str, Any]], why: str
) -> None:
    (alert,), _ = _replayed(tmp_path, _working_weeks() + records + _calls(OTHER_JP_IP, TRIP))
    assert "session_elsewhere" not in _factors(alert), why


def test_given_her_home_line_placed_across_the_border_then_her_own_network_is_not_elsewhere(
    tmp_path: Path,
) -> None:
    """She signs in at home over Telekom; the database puts her line in Austria that day."""
    records = _working_weeks() + _home_sign_in() + _calls(AT_TELEKOM_IP, TRIP)
    alerts, _ = _replayed(tmp_path, records)
    assert all("session_elsewhere" not in _factors(a) for a in alerts)


def test_given_her_session_used_from_a_cloud_instance_then_the_hosting_provider_not_the_session_speaks(
    tmp_path: Path,
) -> None:
    """A hosting address's country says nothing of where the caller is (a VPN gateway)."""
    records = _working_weeks() + _home_sign_in() + _calls(TOKYO_EC2_IP, TRIP)
    (alert,), _ = _replayed(tmp_path, records)
    assert "session_elsewhere" not in _factors(alert)


def test_given_no_asn_database_then_no_session_factor(tmp_path: Path) -> None:
    records = _working_weeks() + _home_sign_in() + _calls(OTHER_JP_IP, TRIP)
    (alert,), _ = _replayed(tmp_path, records, asn=False)
    assert "session_elsewhere" not in _factors(alert)


def test_given_a_thief_who_starts_a_sign_in_as_her_from_japan_then_the_session_is_still_elsewhere(
    tmp_path: Path,
) -> None:
    """Anyone may type her name at the sign-in page: a challenge with no ``UserAuthentication``
    (the thief has her session, not her password and second factor) places nobody in Japan."""
    unfinished = _identity_center(
        TRIP - timedelta(minutes=10), OTHER_JP_IP, outcome="Failure", workflow="w-x"
    )
    records = _working_weeks() + _home_sign_in() + unfinished + _calls(OTHER_JP_IP, TRIP)
    (alert,), _ = _replayed(tmp_path, records)
    assert _factors(alert) == ["session_elsewhere"]


def test_given_the_factor_turned_off_then_the_session_is_not_weighed(tmp_path: Path) -> None:
    records = _working_weeks() + _home_sign_in() + _calls(OTHER_JP_IP, TRIP)
    options = RunOptions(factors=FACTORS - {"session_elsewhere"})
    (alert,), _ = _replayed(tmp_path, records, options)
    assert _factors(alert) == []
    assert "alone, no higher" not in alert["explanation"]


def test_given_a_sign_in_read_by_an_earlier_run_then_the_session_is_still_elsewhere(tmp_path: Path) -> None:
    """Her sign-in eight hours before: an earlier run read it, this one finds it in the counters."""
    sign_in = _identity_center(TRIP - timedelta(hours=8), DE_IP, factor="TOTP", workflow="w-early")
    (alert,), _ = _replayed(tmp_path, _working_weeks() + sign_in + _calls(OTHER_JP_IP, TRIP))
    assert _factors(alert) == ["session_elsewhere"]


# Japan, where three colleagues live, scores under this threshold for alice (the organization works
# there): her session used from Japan alerts only for what comes with it.
STRICT = RunOptions(policy=ScoringPolicy(threshold=99.0))


def _japanese_colleagues() -> list[dict[str, Any]]:
    days = [MONDAY + timedelta(days=d) for d in range(22) if (MONDAY + timedelta(days=d)).weekday() < 5]
    return [
        record(day + timedelta(hours=h, minutes=7), ip=ip, arn=f"arn:aws:iam::{ACCOUNT}:user/{name}")
        for day in days
        for h in range(8)
        for name, ip in zip(("kenji", "yuki", "aiko"), JP_HOME_IPS, strict=True)
    ]


def test_given_her_session_used_from_a_colleagues_country_under_the_threshold_then_admitted_for_it(
    tmp_path: Path,
) -> None:
    """The hijacked session of the enterprise simulation: used from where many colleagues live,
    with her own client and everyday methods; rarity alone stays quiet, the sign-in does not."""
    # Given alice in Germany, colleagues in Japan, her sign-in at home, her session's calls from Japan
    records = _working_weeks() + _japanese_colleagues() + _home_sign_in() + _calls(OTHER_JP_IP, TRIP)

    # When replayed with a threshold Japan does not reach
    (alert,), _ = _replayed(tmp_path, records, STRICT)

    # Then it alerts for the session begun elsewhere, saying it was under the threshold
    assert alert["location"] == "JP"
    assert alert["score"] < STRICT.policy.threshold
    assert _factors(alert) == ["session_elsewhere"]
    assert alert["severity"] == "medium"  # low for the rarity, one level for the session
    assert "under the threshold 99" in alert["explanation"]


def test_given_the_same_calls_without_her_sign_in_at_home_then_no_alert(tmp_path: Path) -> None:
    """The control: what the factor admits is below the threshold."""
    records = _working_weeks() + _japanese_colleagues() + _calls(OTHER_JP_IP, TRIP)
    assert _replayed(tmp_path, records, STRICT)[0] == []


def test_given_the_factor_turned_off_then_under_the_threshold_nothing_is_admitted(tmp_path: Path) -> None:
    records = _working_weeks() + _japanese_colleagues() + _home_sign_in() + _calls(OTHER_JP_IP, TRIP)
    options = replace(STRICT, factors=FACTORS - {"session_elsewhere"})
    assert _replayed(tmp_path, records, options)[0] == []


# ---------------------------------------------------------------------------- impossible travel


@pytest.mark.parametrize("options", [None, STRICT], ids=["above-the-threshold", "under-the-threshold"])
def test_given_her_session_used_from_japan_two_hours_after_she_signed_in_at_home_then_it_pages(
    tmp_path: Path, options: RunOptions | None
) -> None:
    """The hijacked session of the enterprise simulation: her own client, everyday methods, a
    country where colleagues live. Nobody flies from Germany to Japan in two hours: the sign-in
    places her at home, and the session is in other hands."""
    # Given alice in Germany, colleagues in Japan, her sign-in at home, her session's calls from
    # Japan two hours later
    sign_in = _identity_center(TRIP - timedelta(hours=2), DE_IP, factor="TOTP", workflow="w-two")
    records = _working_weeks() + _japanese_colleagues() + sign_in + _calls(OTHER_JP_IP, TRIP)

    # When replayed (under the strict threshold too), with impossible travel and without it
    (alert,), _ = _replayed(tmp_path, records, options)
    without_options = replace(options or RunOptions(), factors=FACTORS - {"impossible_travel"})
    (without,), _ = _replayed(tmp_path / "without", records, without_options)

    # Then the session begun elsewhere has impossible travel beside it: a page, where the session
    # alone is a look
    assert alert["location"] == "JP"
    assert sorted(_factors(alert)) == ["impossible_travel", "session_elsewhere"]
    assert "signed in from DE" in alert["explanation"]
    assert alert["severity"] in {"high", "critical"}
    assert _factors(without) == ["session_elsewhere"]
    assert without["severity"] == "medium"
