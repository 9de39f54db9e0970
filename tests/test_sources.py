"""What a ``sourceIPAddress`` is, and the method and principal keys a record is counted under."""

from __future__ import annotations

import pytest

from trailgeo.core.aggregate import method_of, principal_of
from trailgeo.core.records import TrailRecord, UserIdentity
from trailgeo.core.sources import SourceClass, SourceKind, classify_source

PUBLIC = SourceKind.PUBLIC
PRIVATE = SourceKind.PRIVATE
SPECIAL = SourceKind.SPECIAL


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("8.8.8.8", "8.8.8.8"),
        ("92.55.146.245", "92.55.146.245"),
        ("172.32.0.1", "172.32.0.1"),  # just above 172.16/12
        ("100.128.0.1", "100.128.0.1"),  # just above 100.64/10
        ("2001:4860:4860::8888", "2001:4860:4860::8888"),
        ("2001:4860:4860:0000:0000:0000:0000:8888", "2001:4860:4860::8888"),
        ("2A00:1450:4001:0829:0000:0000:0000:200E", "2a00:1450:4001:829::200e"),
        ("2A02:CF40::1", "2a02:cf40::1"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("::FFFF:5.6.7.8", "5.6.7.8"),
    ],
)
def test_given_public_address_when_classified_then_public_with_canonical_text(
    value: str, canonical: str
) -> None:
    """Given a globally routable IPv4/IPv6 literal in any spelling, when classified, then it is
    public and carries the canonical (lower-case, compressed, IPv4-unmapped) text."""
    assert classify_source(value) == SourceClass(PUBLIC, canonical)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("10.0.0.1", "10.0.0.1"),
        ("10.255.255.255", "10.255.255.255"),
        ("172.16.0.1", "172.16.0.1"),
        ("172.31.255.254", "172.31.255.254"),
        ("192.168.1.10", "192.168.1.10"),
        ("FC00::1", "fc00::1"),
        ("fd12:3456:789a::1", "fd12:3456:789a::1"),
        ("100.64.0.1", "100.64.0.1"),
        ("100.127.255.254", "100.127.255.254"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
    ],
)
def test_given_private_address_when_classified_then_private(value: str, canonical: str) -> None:
    """Given RFC 1918, ULA (fc00::/7) or shared (100.64/10) space, when classified, then private."""
    assert classify_source(value) == SourceClass(PRIVATE, canonical)


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("169.254.169.254", "169.254.169.254"),
        ("0.0.0.0", "0.0.0.0"),  # noqa: S104 - a value under test, not a bind address
        ("192.0.2.1", "192.0.2.1"),
        ("198.51.100.7", "198.51.100.7"),
        ("203.0.113.5", "203.0.113.5"),
        ("2001:DB8::1", "2001:db8::1"),
        ("::1", "::1"),
        ("::", "::"),
        ("fe80::1", "fe80::1"),
        ("255.255.255.255", "255.255.255.255"),
        ("240.0.0.1", "240.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
    ],
)
def test_given_special_address_when_classified_then_special(value: str, canonical: str) -> None:
    """Given loopback, link-local, unspecified, documentation, reserved or broadcast, when
    classified, then special (an address, but never geolocated)."""
    assert classify_source(value) == SourceClass(SPECIAL, canonical)


@pytest.mark.parametrize("value", ["224.0.0.1", "239.255.255.250", "ff02::1"])
def test_given_multicast_address_when_classified_then_special(value: str) -> None:
    """Given a multicast literal, when classified, then special, not public."""
    assert classify_source(value).kind is SPECIAL


@pytest.mark.parametrize(
    "value", ["ec2.amazonaws.com", "cloudtrail.amazonaws.com", "ssm.amazonaws.com.cn", "EC2.AMAZONAWS.COM"]
)
def test_given_aws_service_host_when_classified_then_service_host_without_ip(value: str) -> None:
    """Given an AWS service principal's host name, when classified, then service host, no IP."""
    assert classify_source(value) == SourceClass(SourceKind.SERVICE_HOST, None)


def test_given_literal_aws_internal_when_classified_then_aws_internal() -> None:
    """Given CloudTrail's literal "AWS Internal", when classified, then aws_internal, no IP."""
    assert classify_source("AWS Internal") == SourceClass(SourceKind.AWS_INTERNAL, None)


@pytest.mark.parametrize(
    "value",
    [
        "253.252.51.07",  # Stratus Red Team's randomised, leading-zero addresses
        "035.249.253.232",
        "1.2.3",
        "999.1.1.1",
        "1.2.3.4.5",
        "not an ip",
        "1.2.3.4 ",
        "redacted",
        "x" * 10_000,
        "1" * 300,
    ],
)
def test_given_unparseable_value_when_classified_then_invalid(value: str) -> None:
    """Given a value that is neither an address nor a host name, when classified, then invalid."""
    assert classify_source(value) == SourceClass(SourceKind.INVALID, None)


@pytest.mark.parametrize("value", ["", None])
def test_given_empty_or_absent_value_when_classified_then_missing(value: str | None) -> None:
    """Given an empty or absent sourceIPAddress, when classified, then missing."""
    assert classify_source(value) == SourceClass(SourceKind.MISSING, None)


@pytest.mark.parametrize(
    "value", ["example.com", "vpn.corp.example.org", "ec2.amazonaws.com.evil.net", "amazonaws.com"]
)
def test_given_other_host_name_when_classified_then_hostname(value: str) -> None:
    """Given a DNS name that is not an AWS service host, when classified, then hostname."""
    assert classify_source(value) == SourceClass(SourceKind.HOSTNAME, None)


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("iam.amazonaws.com", "CreateUser", "iam.amazonaws.com:CreateUser"),
        ("s3.amazonaws.com", "GetObject", "s3.amazonaws.com:GetObject"),
        (None, "CreateUser", None),
        ("iam.amazonaws.com", None, None),
        ("", "CreateUser", None),
        ("iam.amazonaws.com", "", None),
        (None, None, None),
    ],
)
def test_given_event_source_and_name_when_keyed_then_source_colon_name_or_none(
    source: str | None, name: str | None, expected: str | None
) -> None:
    """Given eventSource and eventName, when the method key is built, then it is
    ``eventSource:eventName``, or None when either is missing or empty."""
    assert method_of(TrailRecord(eventSource=source, eventName=name)) == expected


def test_given_hostile_long_event_name_when_keyed_then_bounded() -> None:
    """Given a 10,000-char eventName, when the method key is built, then it is clipped."""
    method = method_of(TrailRecord(eventSource="iam.amazonaws.com", eventName="A" * 10_000))
    assert method is not None
    assert method.startswith("iam.amazonaws.com:AAAA")
    assert len(method) < 300


ROOT_ARN = "arn:aws:iam::493859302102:root"


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (UserIdentity(type="Root", arn=ROOT_ARN, principalId="493859302102"), ROOT_ARN),
        (UserIdentity(type="IAMUser", arn="", principalId="AIDAEXAMPLE"), "IAMUser:AIDAEXAMPLE"),
        (UserIdentity(type="AWSAccount", principalId="AIDAOTHER"), "AWSAccount:AIDAOTHER"),
        # No arn and no principalId: the type alone (the Elastic oracle's Identity Center and
        # AWSService records take this path), not "unknown".
        (UserIdentity(type="IdentityCenterUser", arn=""), "IdentityCenterUser"),
        (UserIdentity(type="AWSService"), "AWSService"),
        (UserIdentity(), "unknown"),
        (None, "unknown"),
    ],
)
def test_given_user_identity_when_principal_keyed_then_arn_else_type_principal_id_else_unknown(
    identity: UserIdentity | None, expected: str
) -> None:
    """Given a userIdentity, when the principal key is built, then it is the ARN, else
    ``type:principalId``, else the type, else "unknown"."""
    assert principal_of(TrailRecord(userIdentity=identity)) == expected
