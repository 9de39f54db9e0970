"""Tuning: parsing and validation, group verdicts, method overrides, and loading from files and SSM."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber
from pydantic import ValidationError

from trailgeo.adapters.local_tuning import load_tuning_file
from trailgeo.adapters.ssm import SsmTuningSource
from trailgeo.core.tuning import EMPTY_TUNING, OTHER_MARKER, MethodPolicy, Tuning, TuningError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tuning.toml"
DAY = date(2026, 11, 28)
ACCOUNT = "111122223333"
ALICE = "arn:aws:iam::111122223333:user/alice"

TOML = """
version = 1
description = "two offices"
ignored_principals = ["arn:aws:sts::*:assumed-role/ci-deployer/*"]
ignored_user_agents = [{ user_agents = ["Terraform/*"], cidrs = ["198.51.100.0/24"] }]

[[allowed_countries]]
principals = ["arn:aws:iam::*:user/alice"]
countries = ["PT", "ES"]
accounts = ["111122223333"]
until = 2026-12-15

[[trusted_cidrs]]
cidr = "198.51.100.0/24"
note = "VPN"

[methods."s3.amazonaws.com:Get*"]
ignore = true
threshold = 70.5
"""

JSON = {
    "version": 1,
    "description": "two offices",
    "ignored_principals": ["arn:aws:sts::*:assumed-role/ci-deployer/*"],
    "ignored_user_agents": [{"user_agents": ["Terraform/*"], "cidrs": ["198.51.100.0/24"]}],
    "allowed_countries": [
        {
            "principals": ["arn:aws:iam::*:user/alice"],
            "countries": ["PT", "ES"],
            "accounts": ["111122223333"],
            "until": "2026-12-15",
        }
    ],
    "trusted_cidrs": [{"cidr": "198.51.100.0/24", "note": "VPN"}],
    "methods": {"s3.amazonaws.com:Get*": {"ignore": True, "threshold": 70.5}},
}


def tuning(text: str) -> Tuning:
    return Tuning.parse("version = 1\n" + text, source="test.toml")


def verdict(
    t: Tuning,
    *,
    principal: str = ALICE,
    country: str = "PT",
    ips: tuple[str, ...] = ("203.0.113.9",),
    agents: tuple[str, ...] = ("aws-cli/2.15",),
    account: str = ACCOUNT,
    on: date = DAY,
) -> str | None:
    return t.group_verdict(
        account=account, principal=principal, country=country, source_ips=ips, user_agents=agents, on=on
    )


# --- parsing --------------------------------------------------------------------------------------------


def test_given_the_same_tuning_in_toml_and_json_when_parsed_then_both_give_the_same_model() -> None:
    from_toml = Tuning.parse(TOML, source="tuning.toml")
    from_json = Tuning.parse(json.dumps(JSON, indent=2), source="tuning.json")

    assert from_toml == from_json
    assert from_toml.allowed_countries[0].until == date(2026, 12, 15)
    assert from_toml.allowed_countries[0].countries == ("PT", "ES")
    assert from_toml.trusted_cidrs[0].note == "VPN"
    assert from_toml.methods["s3.amazonaws.com:Get*"] == MethodPolicy(ignore=True, threshold=70.5)
    assert from_toml.description == "two offices"


def test_given_json_with_leading_whitespace_and_a_bom_when_parsed_then_it_is_read_as_json() -> None:
    parsed = Tuning.parse('\ufeff\n  {"version": 1, "ignored_principals": ["arn:x"]}', source="p")

    assert parsed.ignored_principals == ("arn:x",)


def test_given_the_example_file_when_loaded_then_it_is_valid_and_means_what_its_comments_say() -> None:
    example = load_tuning_file(EXAMPLE)

    assert example.version == 1
    assert verdict(example, principal="arn:aws:iam::999999999999:user/bob", country="ES") == "allowed_country"
    assert verdict(example, country="JP", on=date(2026, 12, 15)) == "allowed_country"
    assert verdict(example, country="JP", on=date(2026, 12, 16)) is None
    bob = "arn:aws:iam::111122223333:user/bob"
    assert verdict(example, principal=bob, country="JP", ips=("198.51.100.7", "2001:db8:1234::1")) == (
        "trusted_cidr"
    )
    assert verdict(example, principal=bob, country="JP") is None
    plan = "arn:aws:sts::111122223333:assumed-role/terraform-plan/run-7"
    terraform = {"country": "JP", "ips": ("198.51.100.7", "198.51.100.8"), "agents": ("Terraform/1.9.0",)}
    assert verdict(example, principal=plan, **terraform) == "trusted_cidr"  # before the agents: order
    assert verdict(example.model_copy(update={"trusted_cidrs": ()}), principal=plan, **terraform) == (
        "ignored_user_agent"
    )
    assert verdict(example.model_copy(update={"trusted_cidrs": ()}), principal=bob, **terraform) is None
    assert example.method_policy("s3.amazonaws.com:GetObject").ignore
    assert example.method_policy("s3.amazonaws.com:GetBucketPolicy") == MethodPolicy(
        ignore=False, sensitive=True, note="exact key: beats the glob above, and always counts as sensitive"
    )
    assert example.method_policy("iam.amazonaws.com:CreateAccessKey").threshold == 30.0


def test_given_a_minimal_document_then_every_section_defaults_to_empty_like_empty_tuning() -> None:
    assert Tuning.parse("version = 1", source="x") == EMPTY_TUNING
    assert verdict(EMPTY_TUNING) is None
    assert EMPTY_TUNING.method_policy("s3.amazonaws.com:GetObject") == MethodPolicy()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # typos are errors, with a suggestion
        ("verison = 1", "verison: unknown field (did you mean 'version'?)"),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountry = ["PT"]',
            "allowed_countries[0].country: unknown field (did you mean 'countries'?)",
        ),
        (
            '[methods."s3.amazonaws.com:GetObject"]\nignroe = true',
            "ignroe: unknown field (did you mean 'ignore'?)",
        ),
        ('[[trusted_cidrs]]\ncidr = "198.51.100.0/24"\nnotes = "x"', "trusted_cidrs[0].notes: unknown field"),
        # countries
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT", "es"]',
            "allowed_countries[0].countries[1]: must be two upper-case letters",
        ),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PRT"]',
            "allowed_countries[0].countries[0]: must be two upper-case letters",
        ),
        ('[[allowed_countries]]\nprincipals = ["a"]\ncountries = []', "countries: must list at least one"),
        ('[[allowed_countries]]\ncountries = ["PT"]', "allowed_countries[0].principals: required"),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT"]\naccounts = [111122223333]',
            "allowed_countries[0].accounts[0]: must be a string in quotes",
        ),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT"]\naccounts = ["1234"]',
            "allowed_countries[0].accounts[0]: must be a 12-digit AWS account id",
        ),
        # until
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT"]\nuntil = "2026-02-30"',
            "allowed_countries[0].until: is not a valid calendar date",
        ),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT"]\nuntil = "next friday"',
            "allowed_countries[0].until: must be a date written YYYY-MM-DD",
        ),
        (
            '[[allowed_countries]]\nprincipals = ["a"]\ncountries = ["PT"]\nuntil = 2026-12-15T18:00:00',
            "allowed_countries[0].until: must be a date (YYYY-MM-DD), not a date-time",
        ),
        # CIDRs
        ('trusted_cidrs = ["198.51.100.7/24"]', "198.51.100.0/24 for the network or 198.51.100.7/32"),
        ('trusted_cidrs = ["vpn.example.com"]', "trusted_cidrs[0].cidr: is not a valid IPv4 or IPv6 network"),
        (
            '[[trusted_cidrs]]\ncidr = "10.0.0.0/33"',
            "trusted_cidrs[0].cidr: is not a valid IPv4 or IPv6 network",
        ),
        ('trusted_cidrs = ["0.0.0.0/0"]', "trusted_cidrs[0].cidr: /0 is too broad to trust"),
        ('trusted_cidrs = ["2000::/3"]', "trusted_cidrs[0].cidr: /3 is too broad to trust"),
        ("trusted_cidrs = [42]", "trusted_cidrs[0]: must be a CIDR string or a table"),
        # thresholds and flags
        (
            '[methods."iam.amazonaws.com:*"]\nthreshold = 101',
            'methods."iam.amazonaws.com:*".threshold: Input',
        ),
        (
            '[methods."iam.amazonaws.com:*"]\nthreshold = -1',
            ".threshold: Input should be greater than or equal to 0",
        ),
        ('[methods."iam.amazonaws.com:*"]\nthreshold = "50"', ".threshold: Input should be a valid number"),
        ('[methods."iam.amazonaws.com:*"]\nthreshold = nan', ".threshold: Input should be a finite number"),
        ('[methods."iam.amazonaws.com:*"]\nsensitive = "yes"', ".sensitive: Input should be a valid boolean"),
        ('[methods."DescribeInstances"]\nignore = true', "must be eventSource:eventName"),
        # globs that would switch the detector off
        ('ignored_principals = ["*"]', "ignored_principals[0]: '*' matches every principal"),
        (
            'ignored_user_agents = [{ user_agents = ["**"], cidrs = ["198.51.100.0/24"] }]',
            "ignored_user_agents[0].user_agents[0]: '**' matches everything",
        ),
        ('ignored_principals = ["arn:aws:iam::*:user/bob "]', "leading or trailing whitespace"),
    ],
)
def test_given_an_invalid_field_when_parsed_then_the_error_names_the_source_and_the_field(
    text: str, expected: str
) -> None:
    with pytest.raises(TuningError) as raised:
        tuning(text)

    assert str(raised.value).startswith("test.toml: invalid tuning, ")
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = 2", "version: unsupported version: this trailgeo reads version 1 only"),
        ('version = "1"', "version: unsupported version"),
        ("version = true", "version: unsupported version"),
        ("version = 1.0", "version: unsupported version"),
        ('description = "no version"', "version: required"),
        ('{"version": 2}', "version: unsupported version"),
    ],
)
def test_given_a_missing_or_unsupported_version_when_parsed_then_it_is_rejected_clearly(
    text: str, expected: str
) -> None:
    with pytest.raises(TuningError, match=r"^ssm:/t: invalid tuning") as raised:
        Tuning.parse(text, source="ssm:/t")

    assert expected in str(raised.value)


def test_given_several_mistakes_when_parsed_then_one_error_lists_every_one_of_them() -> None:
    text = """
    version = 1
    ignored_principals = ["*"]
    trusted_cidrs = ["nope"]
    [[allowed_countries]]
    principals = ["a"]
    countries = ["pt"]
    """

    with pytest.raises(TuningError, match="3 problems") as raised:
        Tuning.parse(text, source="t")

    message = str(raised.value)
    for path in ("ignored_principals[0]", "trusted_cidrs[0].cidr", "allowed_countries[0].countries[0]"):
        assert path in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = ", "bad.toml: not valid TOML"),
        ('{"version": 1,}', "bad.toml: not valid JSON"),
        ('{"version": 1, "version": 1}', "bad.toml: not valid JSON: duplicate key 'version'"),
    ],
)
def test_given_text_that_is_not_toml_or_json_when_parsed_then_the_error_names_the_source(
    text: str, expected: str
) -> None:
    with pytest.raises(TuningError, match=expected):
        Tuning.parse(text, source="bad.toml")


def test_given_a_tuning_then_it_is_frozen_and_a_copy_is_revalidated_and_recompiled() -> None:
    original = tuning('ignored_principals = ["arn:aws:iam::*:user/alice"]')
    assert verdict(original) == "ignored_principal"  # compiles and caches the globs

    with pytest.raises(ValidationError):
        original.ignored_principals = ()  # type: ignore[misc]
    copy = original.model_copy(update={"ignored_principals": ("arn:aws:iam::*:user/bob",)})
    assert verdict(copy) is None
    with pytest.raises(ValidationError):
        original.model_copy(update={"ignored_principals": ("*",)})


# --- verdicts -------------------------------------------------------------------------------------------


def test_given_ignored_principal_globs_then_matching_principals_are_ignored_case_sensitively() -> None:
    t = tuning('ignored_principals = ["arn:aws:sts::*:assumed-role/ci-?/*"]')

    assert verdict(t, principal="arn:aws:sts::111122223333:assumed-role/ci-1/build-42") == "ignored_principal"
    assert verdict(t, principal="arn:aws:sts::111122223333:assumed-role/ci-12/build-42") is None  # ? is one
    assert verdict(t, principal="arn:aws:sts::111122223333:assumed-role/CI-1/build-42") is None
    assert verdict(t, principal=ALICE) is None


def test_given_an_allowed_country_entry_then_it_applies_to_its_principals_countries_and_accounts_only() -> (
    None
):
    t = tuning(
        '[[allowed_countries]]\nprincipals = ["arn:aws:iam::*:user/alice", "arn:aws:iam::*:user/carol"]\n'
        'countries = ["PT", "ES"]\naccounts = ["111122223333"]'
    )

    assert verdict(t, country="PT") == "allowed_country"
    assert verdict(t, country="ES", principal="arn:aws:iam::111122223333:user/carol") == "allowed_country"
    assert verdict(t, country="FR") is None
    assert verdict(t, principal="arn:aws:iam::111122223333:user/bob") is None
    assert verdict(t, principal="arn:aws:iam::111122223333:user/alice-admin") is None  # whole value matches
    assert verdict(t, account="444455556666", principal="arn:aws:iam::444455556666:user/alice") is None


def test_given_a_star_principal_then_star_crosses_slashes_and_colons() -> None:
    t = tuning('[[allowed_countries]]\nprincipals = ["arn:aws:iam::*:user/*"]\ncountries = ["PT"]')

    assert verdict(t, principal="arn:aws:iam::111122223333:user/team/dev/alice") == "allowed_country"
    assert verdict(t, principal="arn:aws:iam::111122223333:role/alice") is None


def test_given_a_trip_entry_with_until_then_it_applies_through_that_day_and_expires_after_it() -> None:
    t = tuning(
        '[[allowed_countries]]\nprincipals = ["arn:aws:iam::*:user/alice"]\n'
        'countries = ["JP"]\nuntil = 2026-12-15'
    )

    assert verdict(t, country="JP", on=date(2026, 12, 1)) == "allowed_country"
    assert verdict(t, country="JP", on=date(2026, 12, 15)) == "allowed_country"
    assert verdict(t, country="JP", on=date(2026, 12, 16)) is None
    assert t.expired_entries(date(2026, 12, 15)) == ()
    assert t.expired_entries(date(2026, 12, 16)) == t.allowed_countries


def test_given_trusted_cidrs_when_every_address_is_inside_then_the_group_is_trusted() -> None:
    t = tuning('trusted_cidrs = ["198.51.100.0/24", {cidr = "2001:db8:1234::/48", note = "v6 egress"}]')

    assert verdict(t, country="BR", ips=("198.51.100.7", "198.51.100.200")) == "trusted_cidr"
    assert verdict(t, country="BR", ips=("2001:db8:1234:5::9",)) == "trusted_cidr"
    assert verdict(t, country="BR", ips=("::ffff:198.51.100.7",)) == "trusted_cidr"


@pytest.mark.parametrize(
    "ips",
    [
        ("198.51.100.7", "203.0.113.9"),  # one address outside
        ("198.51.100.7", OTHER_MARKER),  # evidence was bounded: the rest is unknown
        ("198.51.100.7", "ec2.amazonaws.com"),  # not an address
        ("2001:db8:ffff::1",),
        (),  # nothing known about the addresses
    ],
)
def test_given_trusted_cidrs_when_not_every_address_is_known_to_be_inside_then_the_group_may_alert(
    ips: tuple[str, ...],
) -> None:
    t = tuning('trusted_cidrs = ["198.51.100.0/24", "2001:db8:1234::/48"]')

    assert verdict(t, country="BR", ips=ips) is None


def test_given_ignored_user_agents_when_every_agent_matches_then_the_group_is_ignored() -> None:
    t = tuning(
        f'ignored_user_agents = [{{ user_agents = ["Terraform/*", "*other"], principals = ["{ALICE}"] }}]'
    )

    assert verdict(t, agents=("Terraform/1.9.0", "Terraform/1.8.5 (+https://www.terraform.io)")) == (
        "ignored_user_agent"
    )
    assert verdict(t, agents=("Terraform/1.9.0", "aws-cli/2.15")) is None
    assert verdict(t, agents=()) is None
    assert verdict(t, agents=("Terraform/1.9.0", OTHER_MARKER)) is None  # even though "*other" matches it
    assert verdict(t, agents=("terraform/1.9.0",)) is None


def test_given_a_group_matching_several_rules_then_the_verdict_follows_the_documented_order() -> None:
    t = tuning(
        'ignored_principals = ["arn:aws:iam::*:user/alice"]\n'
        'ignored_user_agents = [{ user_agents = ["aws-cli/*"], principals = ["arn:aws:iam::*:user/bob"] }]\n'
        'trusted_cidrs = ["203.0.113.0/24"]\n'
        '[[allowed_countries]]\nprincipals = ["*"]\ncountries = ["PT"]'
    )
    bob = "arn:aws:iam::111122223333:user/bob"

    assert verdict(t) == "ignored_principal"
    assert verdict(t, principal=bob) == "allowed_country"
    assert verdict(t, principal=bob, country="BR") == "trusted_cidr"
    assert verdict(t, principal=bob, country="BR", ips=("192.0.2.1",)) == "ignored_user_agent"
    assert verdict(t, principal=bob, country="BR", ips=("192.0.2.1",), agents=("Boto3/1.35",)) is None


# --- method overrides -------------------------------------------------------------------------------------


def test_given_overrides_then_an_exact_key_wins_over_globs_and_globs_apply_in_file_order() -> None:
    t = tuning(
        '[methods."s3.amazonaws.com:*"]\nthreshold = 80.0\n'
        '[methods."s3.amazonaws.com:Get*"]\nignore = true\n'
        '[methods."s3.amazonaws.com:GetBucketPolicy"]\nsensitive = true\n'
        '[methods."*:Delete*"]\nsensitive = true\n'
    )

    assert t.method_policy("s3.amazonaws.com:GetBucketPolicy") == MethodPolicy(sensitive=True)
    assert t.method_policy("s3.amazonaws.com:GetObject") == MethodPolicy(threshold=80.0)  # first glob
    assert t.method_policy("s3.amazonaws.com:DeleteBucket") == MethodPolicy(threshold=80.0)
    assert t.method_policy("ec2.amazonaws.com:DeleteVpc") == MethodPolicy(sensitive=True)
    assert t.method_policy("ec2.amazonaws.com:deletevpc") == MethodPolicy()  # case-sensitive
    assert t.method_policy("ec2.amazonaws.com:RunInstances") == MethodPolicy()
    assert t.method_policy("s3.amazonaws.com:GetObject") == MethodPolicy(threshold=80.0)  # cached, same


# --- adapters -----------------------------------------------------------------------------------------------


def test_given_a_json_file_when_loaded_then_it_is_parsed_and_errors_name_the_file(tmp_path: Path) -> None:
    good, bad = tmp_path / "tuning.json", tmp_path / "bad.toml"
    good.write_text(json.dumps(JSON), encoding="utf-8")
    bad.write_text('version = 1\nignored_principal = ["x"]\n', encoding="utf-8")

    assert load_tuning_file(good) == Tuning.parse(TOML, source="x")
    with pytest.raises(TuningError, match=r"bad\.toml: invalid tuning.*ignored_principal: unknown field"):
        load_tuning_file(bad)


def test_given_a_missing_or_binary_file_when_loaded_then_the_error_says_so(tmp_path: Path) -> None:
    binary = tmp_path / "tuning.toml"
    binary.write_bytes(b"version = 1\n\xff\xfe")

    with pytest.raises(TuningError, match="tuning file not found"):
        load_tuning_file(tmp_path / "missing.toml")
    with pytest.raises(TuningError, match="not UTF-8"):
        load_tuning_file(binary)
    with pytest.raises(TuningError, match="is a directory"):
        load_tuning_file(tmp_path)


@pytest.mark.parametrize("kind", ["String", "SecureString"])
def test_given_an_ssm_parameter_when_loaded_then_it_is_decrypted_and_parsed(aws: Any, kind: str) -> None:
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/trailgeo/tuning", Value=TOML, Type=kind)

    loaded = SsmTuningSource(ssm).load("/trailgeo/tuning")

    assert loaded == Tuning.parse(TOML, source="x")


def test_given_an_invalid_ssm_parameter_when_loaded_then_the_error_names_the_parameter_and_field(
    aws: Any,
) -> None:
    ssm = aws.client("ssm")
    ssm.put_parameter(
        Name="/trailgeo/tuning", Value='{"version": 1, "trusted_cidrs": ["nope"]}', Type="String"
    )

    with pytest.raises(
        TuningError, match=r"SSM parameter /trailgeo/tuning \(version 1\).*trusted_cidrs\[0\]"
    ):
        SsmTuningSource(ssm).load("/trailgeo/tuning")


def test_given_a_missing_or_stringlist_parameter_when_loaded_then_the_error_says_what_to_fix(
    aws: Any,
) -> None:
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/trailgeo/list", Value="version = 1,x", Type="StringList")

    with pytest.raises(TuningError, match="SSM parameter /trailgeo/missing: not found"):
        SsmTuningSource(ssm).load("/trailgeo/missing")
    with pytest.raises(TuningError, match="is a StringList; store the tuning as a String or SecureString"):
        SsmTuningSource(ssm).load("/trailgeo/list")


def test_given_access_denied_when_loaded_then_the_error_names_the_missing_permissions(aws: Any) -> None:
    ssm = aws.client("ssm")
    with Stubber(ssm) as stub:
        stub.add_client_error(
            "get_parameter",
            service_error_code="AccessDeniedException",
            service_message="User: arn:aws:sts::123456789012:assumed-role/fn/x is not authorized",
            http_status_code=400,
            expected_params={"Name": "/trailgeo/tuning", "WithDecryption": True},
        )
        with pytest.raises(TuningError) as raised:
            SsmTuningSource(ssm).load("/trailgeo/tuning")

    message = str(raised.value)
    assert "ssm:GetParameter on arn:aws:ssm:us-east-1:<account-id>:parameter/trailgeo/tuning" in message
    assert "kms:Decrypt" in message
    assert "not authorized" in message


def test_given_another_aws_error_when_loaded_then_it_becomes_a_tuning_error_with_the_code(aws: Any) -> None:
    ssm = aws.client("ssm")
    with Stubber(ssm) as stub:
        stub.add_client_error("get_parameter", service_error_code="ThrottlingException", http_status_code=400)
        with pytest.raises(TuningError, match="SSM parameter tuning: ThrottlingException"):
            SsmTuningSource(ssm).load("tuning")
