"""The notification channels: Slack (a local webhook server), Chatbot, Security Hub and EventBridge (moto)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parameters import base as parameters_base

from tests.conftest import EVENTS
from trailgeo.adapters.channels import (
    EVENT_DETAIL_LIMIT,
    EVENT_DETAIL_TYPE,
    OCSF_DETAIL_TYPE,
    ChannelError,
    EventBridgeChannel,
    OcsfChannel,
    SecretWebhookUrl,
    SecurityHubChannel,
    SlackChannel,
    SlackWebhookPoster,
    bounded_detail,
)
from trailgeo.core.alerts import (
    Alert,
    CloudTrail,
    Omitted,
    Rule,
    Source,
    UserAgent,
    UserIdentity,
)
from trailgeo.core.render.asff import asff_finding, default_product_arn, validate_finding
from trailgeo.core.render.chatbot import chatbot_notification
from trailgeo.core.render.envelope import sns_message
from trailgeo.core.render.mrkdwn import BACKTICK_STANDIN, FIELD_LIMIT, SECTION_LIMIT
from trailgeo.core.render.ocsf import detection_finding
from trailgeo.core.render.shared import console_links
from trailgeo.core.render.slack import HEADER_LIMIT, MAX_BLOCKS, MAX_FIELDS, slack_message

REGION = "us-east-1"
HUB_ACCOUNT = "123456789012"  # moto's account
PRODUCT_ARN = default_product_arn("aws", REGION, HUB_ACCOUNT)
ALERT_ID = "5f1c0a7e9b2d4c3e8a6f0b1d2c3e4f5a"
HOSTILE = [
    "<!channel>",
    "<!here|here>",
    "<http://evil.example|click>",
    "<@U024BE7LH>",
    "*bold* _it_ ~strike~ `code` ```block```",
    "line1\nline2\r\nline3",
    "@channel @here",
]


def fixed_alert(**changes: Any) -> Alert:
    """The alert of events/sqs-alert.json (raw SNS delivery: the body is the alert JSON)."""
    event = json.loads((EVENTS / "sqs-alert.json").read_text(encoding="utf-8"))
    alert = Alert.model_validate_json(event["Records"][0]["body"])
    return alert.model_copy(update=changes)


def hostile_alert() -> Alert:
    evil = " ".join(HOSTILE)
    arn = f"arn:aws:sts::111122223333:assumed-role/Admin/{evil}"
    alert = fixed_alert()
    methods = [m.model_copy(update={"method": f"iam.amazonaws.com:{evil}"}) for m in alert.methods]
    return alert.model_copy(
        update={
            "aws": alert.aws.model_copy(
                update={"cloudtrail": CloudTrail(user_identity=UserIdentity(arn=arn, access_key_id=evil))}
            ),
            "source": Source(geo=alert.source.geo, ip=[evil, "67.43.156.10"]),
            "user_agent": UserAgent(original=["A" * 1_000_000 + evil, evil]),
            "access_key_ids": [evil * 100],
            "explanation": f"called by {evil}\n" + evil * 2000,
            "methods": methods,
            "follows_alert_id": evil,
        }
    )


# ---------------------------------------------------------------------------- a local Slack


@dataclass
class FakeSlack:
    """An incoming-webhook stand-in on 127.0.0.1: records each POST, answers ``status``."""

    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    fake = FakeSlack()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            assert self.headers.get("Content-Type", "").startswith("application/json")
            fake.posts.append(json.loads(body))
            fake.paths.append(self.path)
            self.send_response(fake.status)
            for name, value in fake.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(b"ok" if fake.status == 200 else b"no_service")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


EXPECTED_SLACK = {
    "text": "CRITICAL: Unusual Country For an AWS Command BT by `arn:aws:iam::111122223333:user/ops/alice`",
    "attachments": [
        {
            "color": "#E01E5A",
            "blocks": [
                {
                    "type": "header",
                    "text": {
                        "type": "plain_text",
                        "text": "CRITICAL · BT · arn:aws:iam::111122223333:user/ops/alice",
                        "emoji": False,
                    },
                },
                {
                    "type": "section",
                    "fields": [
                        {
                            "type": "mrkdwn",
                            "text": "*Who*\n`arn:aws:iam::111122223333:user/ops/alice` (`IAMUser`)",
                        },
                        {"type": "mrkdwn", "text": "*Account*\n`111122223333`"},
                        {"type": "mrkdwn", "text": "*Access key*\n`AKIAEXAMPLEKEY000001`"},
                        {"type": "mrkdwn", "text": "*From*\n`BT` `67.43.156.10`"},
                        {
                            "type": "mrkdwn",
                            "text": "*When*\n`2026-11-02T14:03:00Z` to `2026-11-02T14:09:00Z`\n"
                            "detected 2026-11-02T14:15:00Z",
                        },
                        {"type": "mrkdwn", "text": "*Score*\n93.5/100, CRITICAL (threshold 50)"},
                        {"type": "mrkdwn", "text": "*User agent*\n`aws-cli/2.15.0 Python/3.11.6`"},
                    ],
                },
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "*Rare methods*\n```\nscore  calls  what  (usual countries)\n"
                        " 93.5      1  iam.amazonaws.com:CreateAccessKey [sensitive]  (US 40)\n"
                        " 81.0      3  s3.amazonaws.com:ListBuckets  (US 390, DE 10)\n```",
                    },
                },
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "*Why it is rare*\n```\n2 AWS method(s) called by "
                        "arn:aws:iam::111122223333:user/ops/alice from BT are unusual.\n"
                        "Organization: no call from BT before this run.\n```",
                    },
                },
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": "<https://console.aws.amazon.com/cloudtrailv2/home?region=eu-west-1"
                            "#/events?AccessKeyId=AKIAEXAMPLEKEY000001"
                            "|CloudTrail: calls with this access key>",
                        },
                        {
                            "type": "mrkdwn",
                            "text": "<https://console.aws.amazon.com/cloudtrailv2/home?region=eu-west-1"
                            "#/events?Username=alice|CloudTrail: calls by this user name>",
                        },
                        {
                            "type": "mrkdwn",
                            "text": "<https://console.aws.amazon.com/iam/home#/users/details/alice"
                            "|IAM: the principal>",
                        },
                        {"type": "mrkdwn", "text": f"Alert `{ALERT_ID}`"},
                    ],
                },
            ],
        }
    ],
}


def poster_for(slack: FakeSlack) -> SlackChannel:
    return SlackChannel(SlackWebhookPoster(lambda: slack.url, timeout=5), default_region=REGION)


def test_given_a_fixed_alert_when_posted_to_slack_then_the_webhook_receives_exactly_the_block_kit_message(
    slack: FakeSlack,
) -> None:
    poster_for(slack).send(fixed_alert())
    assert slack.posts == [EXPECTED_SLACK]


def test_given_an_alert_of_a_sibling_detector_when_rendered_then_its_rule_and_findings_are_shown() -> None:
    finding = SimpleNamespace(value="AccessDenied", score=88.0, events_in_run=4, sensitive=False)
    alert = fixed_alert(
        methods=[],
        detector="error_code",
        rule=Rule(name="Rare AWS Error Code", threshold=50),
        findings=[finding],
    )
    message = slack_message(alert, REGION)
    assert message["text"].startswith("CRITICAL: Rare AWS Error Code BT by ")
    rare = message["attachments"][0]["blocks"][2]["text"]["text"]
    assert rare == (
        "*What is rare*\n```\nscore  calls  what  (usual countries)\n 88.0      4  AccessDenied\n```"
    )
    found = asff_finding(alert, PRODUCT_ARN)
    assert validate_finding(found) == []
    assert found["GeneratorId"] == "trailgeo/rare-aws-error-code"
    assert found["Title"] == "Rare AWS Error Code by arn:aws:iam::111122223333:user/ops/alice"
    assert found["ProductFields"]["trailgeo/Methods"] == "AccessDenied"


def all_texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from all_texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_texts(item)


def assert_inert(text: str) -> None:
    """No Slack control sequence, no line break or formatting outside our own code spans."""
    for bad in ("<!", "<@", "<http://evil", "|click>", "\r"):
        assert bad not in text, (bad, text[:300])


def test_given_hostile_strings_when_rendered_for_slack_then_they_neither_ping_nor_link_nor_style(
    slack: FakeSlack,
) -> None:
    poster_for(slack).send(hostile_alert())
    (posted,) = slack.posts
    (attachment,) = posted["attachments"]
    blocks = attachment["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    assert len(blocks[0]["text"]["text"]) <= HEADER_LIMIT
    fields = blocks[1]["fields"]
    assert len(fields) <= MAX_FIELDS
    assert all(len(f["text"]) <= FIELD_LIMIT for f in fields)
    for block in blocks[2:4]:
        assert len(block["text"]["text"]) <= SECTION_LIMIT
    for text in all_texts(posted):
        assert_inert(text)
    # every attacker string sits in inline code on one line, its backticks replaced
    who = fields[0]["text"]
    assert who.startswith("*Who*\n`arn:aws:sts::111122223333:assumed-role/Admin/&lt;!channel&gt; ")
    assert "&lt;http://evil.example|click&gt;" in who
    assert "\n" not in who.removeprefix("*Who*\n")
    assert who.count("`") == 2  # the span's own backticks only: those inside became look-alikes
    assert f"{BACKTICK_STANDIN}code{BACKTICK_STANDIN}" in who
    # the megabyte user agent is cut, the message stays small
    assert len(json.dumps(posted)) < 40_000
    assert "…" in fields[6]["text"]
    # links stay ours: the hostile session name is percent-encoded in the URL
    links = [e["text"] for e in blocks[4]["elements"]]
    assert all(len(link) <= SECTION_LIMIT for link in links)
    assert links[0].endswith("|CloudTrail: calls with this access key>")
    assert "%3C%21channel%3E" in links[0]
    assert links[2] == "<https://console.aws.amazon.com/iam/home#/roles/details/Admin|IAM: the principal>"


@pytest.mark.parametrize(("status", "headers"), [(500, {}), (429, {"Retry-After": "1"}), (404, {})])
def test_given_slack_answers_an_error_when_posting_then_the_channel_fails(
    slack: FakeSlack, status: int, headers: dict[str, str]
) -> None:
    slack.status, slack.headers = status, headers
    with pytest.raises(ChannelError, match=f"HTTP {status}"):
        poster_for(slack).send(fixed_alert())
    assert len(slack.posts) == 1


@pytest.mark.handler  # connects to a closed port on 127.0.0.1
def test_given_no_server_listening_when_posting_then_the_channel_fails_without_the_url() -> None:
    url = "http://127.0.0.1:9/services/T000/B000/SECRET"
    channel = SlackChannel(SlackWebhookPoster(lambda: url, timeout=2))
    with pytest.raises(ChannelError) as raised:
        channel.send(fixed_alert())
    assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize("url", ["http://hooks.slack.com/services/x", "file:///etc/passwd", "ftp://x/y", ""])
def test_given_a_webhook_that_is_not_https_when_posting_then_it_is_refused(url: str) -> None:
    with pytest.raises(ChannelError, match="https"):
        SlackChannel(SlackWebhookPoster(lambda: url)).send(fixed_alert())


def secret_reads(client: Any) -> list[str]:
    """The SecretIds of every GetSecretValue ``client`` makes from now on."""
    reads: list[str] = []
    client.meta.events.register(
        "provide-client-params.secrets-manager.GetSecretValue",
        lambda params, **_: reads.append(params["SecretId"]),
    )
    return reads


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The time Powertools Parameters' cache reads (``datetime.now()``), moved by the test."""
    now = [datetime(2026, 11, 2, 14, 0)]  # noqa: DTZ001 - Powertools compares naive local times

    class Clock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # noqa: ARG003 - datetime's signature
            return now[0]

    monkeypatch.setattr(parameters_base, "datetime", Clock)
    return now


def test_given_the_webhook_secret_when_read_twice_within_five_minutes_then_secrets_manager_is_called_once(
    aws: Any, clock: list[datetime]
) -> None:
    client = aws.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(
        Name="trailgeo/slack", SecretString=json.dumps({"url": "https://hooks.slack.com/services/A/B/C"})
    )["ARN"]
    reads = secret_reads(client)
    source = SecretWebhookUrl.from_client(client, arn)
    assert source() == "https://hooks.slack.com/services/A/B/C"
    client.put_secret_value(SecretId=arn, SecretString="https://hooks.slack.com/services/D/E/F")
    clock[0] += timedelta(seconds=299)
    assert source() == "https://hooks.slack.com/services/A/B/C"  # cached (Powertools Parameters)
    clock[0] += timedelta(seconds=2)
    assert source() == "https://hooks.slack.com/services/D/E/F"  # re-read after 5 minutes
    assert reads == [arn, arn]


def test_given_a_cached_webhook_when_forgotten_then_the_next_read_is_a_forced_fetch(aws: Any) -> None:
    client = aws.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="trailgeo/slack", SecretString="https://hooks.slack.com/services/A/B/C")[
        "ARN"
    ]
    reads = secret_reads(client)
    source = SecretWebhookUrl.from_client(client, arn)
    assert source() == source() == "https://hooks.slack.com/services/A/B/C"
    client.put_secret_value(SecretId=arn, SecretString="https://hooks.slack.com/services/D/E/F")
    source.forget()
    assert source() == "https://hooks.slack.com/services/D/E/F"  # at once, not after 5 minutes
    assert source() == "https://hooks.slack.com/services/D/E/F"  # and cached again
    assert reads == [arn, arn]


def test_given_a_secret_with_no_slack_url_when_read_then_the_channel_fails_and_the_next_read_fetches(
    aws: Any,
) -> None:
    client = aws.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="trailgeo/slack", SecretString='{"url": "https://evil.example/x"}')["ARN"]
    reads = secret_reads(client)
    source = SecretWebhookUrl.from_client(client, arn)
    with pytest.raises(ChannelError, match="another host") as raised:
        source()
    assert "evil.example" not in str(raised.value)  # the secret's content is never repeated
    client.put_secret_value(SecretId=arn, SecretString="https://hooks.slack.com/services/A/B/C")
    assert source() == "https://hooks.slack.com/services/A/B/C"  # the fixed secret, without waiting
    assert len(reads) == 2


def test_given_no_readable_secret_when_read_then_the_channel_fails_naming_the_cause(aws: Any) -> None:
    client = aws.client("secretsmanager", region_name=REGION)
    source = SecretWebhookUrl.from_client(client, f"arn:aws:secretsmanager:{REGION}:123456789012:secret:gone")
    with pytest.raises(ChannelError, match="cannot read the Slack webhook secret"):
        source()


def test_given_slack_answers_403_when_posting_then_the_retry_reads_the_rotated_secret(
    aws: Any, slack: FakeSlack
) -> None:
    # Given a webhook cached from its secret, then revoked in Slack and rotated in the secret
    client = aws.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(Name="trailgeo/slack", SecretString=slack.url)["ARN"]
    reads = secret_reads(client)
    channel = SlackChannel(SlackWebhookPoster(SecretWebhookUrl.from_client(client, arn), timeout=5))
    channel.send(fixed_alert())
    rotated = slack.url.replace("XXXX", "YYYY")
    client.put_secret_value(SecretId=arn, SecretString=rotated)

    # When Slack answers 403 for the old URL, then the message is retried
    slack.status = 403
    with pytest.raises(ChannelError, match="HTTP 403"):
        channel.send(fixed_alert())
    slack.status = 200
    channel.send(fixed_alert())

    # Then the retry posted to the rotated URL, read at once (not after the cache's 5 minutes)
    assert slack.paths == ["/services/T000/B000/XXXX", "/services/T000/B000/XXXX", "/services/T000/B000/YYYY"]
    assert len(reads) == 2


# ---------------------------------------------------------------------------- Chatbot

EXPECTED_CHATBOT = {
    "version": "1.0",
    "source": "custom",
    "id": ALERT_ID,
    "content": {
        "textType": "client-markdown",
        "title": ":red_circle: CRITICAL: Unusual Country For an AWS Command (BT)",
        "description": "*Who:* `arn:aws:iam::111122223333:user/ops/alice`\n"
        "*Account:* `111122223333`\n"
        "*Access key:* `AKIAEXAMPLEKEY000001`\n"
        "*From:* `BT` `67.43.156.10`\n"
        "*When:* `2026-11-02T14:03:00Z` to `2026-11-02T14:09:00Z`\n"
        "*Score:* 93.5/100 (threshold 50)\n"
        "*Rare methods:* `iam.amazonaws.com:CreateAccessKey`, `s3.amazonaws.com:ListBuckets`\n"
        "*User agent:* `aws-cli/2.15.0 Python/3.11.6`\n"
        f"*Alert:* `{ALERT_ID}`",
        "nextSteps": [
            "Ask the owner of the principal whether they are travelling or on a new VPN or network.",
            (
                "Review every call made with the access key: https://console.aws.amazon.com/cloudtrailv2/home"
                "?region=eu-west-1#/events?AccessKeyId=AKIAEXAMPLEKEY000001"
            ),
            (
                "Review the calls by this user name: https://console.aws.amazon.com/cloudtrailv2/home"
                "?region=eu-west-1#/events?Username=alice"
            ),
            "Inspect the principal in IAM: https://console.aws.amazon.com/iam/home#/users/details/alice",
            (
                "If not recognised: deactivate the key or revoke the sessions, then look for persistence "
                "(new users, keys, roles, policies) and changes to CloudTrail or GuardDuty."
            ),
        ],
        "keywords": ["trailgeo", "critical", "BT", "111122223333", "sensitive"],
    },
    "metadata": {
        "threadId": ALERT_ID,
        "summary": "CRITICAL: unusual country BT for AWS command",
        "eventType": "UnusualCountryForAwsCommand",
        "additionalContext": {"alert_id": ALERT_ID, "score": "93.5"},
    },
}


def test_given_an_alert_when_published_then_https_subscribers_get_the_chatbot_custom_notification() -> None:
    message = json.loads(sns_message(fixed_alert()))
    assert set(message) == {"default", "email", "https"}
    assert json.loads(message["https"]) == EXPECTED_CHATBOT
    assert json.loads(message["default"]) == json.loads(fixed_alert().to_json())  # machines keep the alert


def test_given_a_re_alert_when_rendered_for_chatbot_then_it_threads_under_the_first_alert() -> None:
    document = chatbot_notification(fixed_alert(alert_id="f" * 32, follows_alert_id=ALERT_ID))
    assert document["metadata"]["threadId"] == ALERT_ID
    assert document["id"] == "f" * 32


def test_given_hostile_strings_when_rendered_for_chatbot_then_they_are_inert_and_bounded() -> None:
    document = chatbot_notification(hostile_alert())
    content = document["content"]
    assert len(content["title"]) <= 250
    assert len(content["description"]) <= 4000
    for text in all_texts(document):
        assert_inert(text)
    assert content["keywords"] == ["trailgeo", "critical", "BT", "111122223333", "sensitive"]
    for line in content["description"].splitlines():
        assert line.startswith("*"), line  # no attacker line break
    assert len(json.loads(sns_message(hostile_alert()))["https"].encode()) < 16 * 1024


# ---------------------------------------------------------------------------- Security Hub


def test_given_a_fixed_alert_when_rendered_as_asff_then_it_is_a_valid_finding_with_its_fields() -> None:
    finding = asff_finding(fixed_alert(), PRODUCT_ARN)
    assert validate_finding(finding) == []
    assert finding["Id"] == ALERT_ID
    assert finding["ProductArn"] == "arn:aws:securityhub:us-east-1:123456789012:product/123456789012/default"
    assert finding["AwsAccountId"] == HUB_ACCOUNT
    assert finding["SchemaVersion"] == "2018-10-08"
    assert finding["GeneratorId"] == "trailgeo/unusual-country-for-aws-command"
    assert finding["Types"][0] == "TTPs/Initial Access/T1078.004-Valid Accounts: Cloud Accounts"
    assert finding["Severity"] == {"Label": "CRITICAL", "Original": "93.5"}
    assert (
        finding["Title"] == "Unusual country BT for AWS command by arn:aws:iam::111122223333:user/ops/alice"
    )
    assert (finding["CreatedAt"], finding["UpdatedAt"]) == (
        "2026-11-02T14:15:00.000Z",
        "2026-11-02T14:15:00.000Z",
    )
    assert (finding["FirstObservedAt"], finding["LastObservedAt"]) == (
        "2026-11-02T14:03:00.000Z",
        "2026-11-02T14:09:00.000Z",
    )
    assert finding["Resources"] == [
        {
            "Type": "AwsIamUser",
            "Id": "arn:aws:iam::111122223333:user/ops/alice",
            "Partition": "aws",
            "Region": REGION,
        },
        {"Type": "AwsIamAccessKey", "Id": "AKIAEXAMPLEKEY000001", "Partition": "aws", "Region": REGION},
    ]
    assert finding["Network"] == {"Direction": "IN", "SourceIpV4": "67.43.156.10"}
    assert finding["SourceUrl"] == console_links(fixed_alert())["access_key"]
    fields = finding["ProductFields"]
    assert (fields["trailgeo/Score"], fields["trailgeo/Country"], fields["trailgeo/AccountId"]) == (
        "93.5",
        "BT",
        "111122223333",
    )


def test_given_a_hostile_alert_when_rendered_as_asff_then_every_limit_holds() -> None:
    finding = asff_finding(hostile_alert(), PRODUCT_ARN)
    assert validate_finding(finding) == []
    assert finding["Resources"][0]["Type"] == "AwsIamRole"
    assert finding["Resources"][0]["Id"] == "arn:aws:iam::111122223333:role/Admin"
    assert finding["Network"] == {"Direction": "IN", "SourceIpV4": "67.43.156.10"}  # the non-IP skipped
    assert "\n" not in finding["Description"]


def test_given_a_broken_finding_when_validated_then_the_problems_are_named() -> None:
    finding = asff_finding(fixed_alert(), PRODUCT_ARN)
    assert validate_finding({**finding, "Title": ""}) == ["missing Title"]
    problems = validate_finding({**finding, "Description": "x" * 1025, "Types": ["Bogus/x"]})
    assert problems == ["Description longer than 1024", "Type 'Bogus/x'"]


def test_given_security_hub_when_an_alert_and_its_re_alert_are_imported_then_one_finding_is_updated(
    aws: Any,
) -> None:
    client = aws.client("securityhub", region_name=REGION)
    client.enable_security_hub()
    channel = SecurityHubChannel(client, PRODUCT_ARN)
    channel.send(fixed_alert())
    channel.send(
        fixed_alert(alert_id="a" * 32, follows_alert_id=ALERT_ID, score=97.0, omitted=Omitted(methods=1))
    )
    (finding,) = client.get_findings()["Findings"]
    assert finding["Id"] == ALERT_ID
    assert finding["Severity"]["Original"] == "97"
    assert finding["ProductFields"]["trailgeo/AlertId"] == "a" * 32
    assert finding["ProductFields"]["trailgeo/FollowsAlertId"] == ALERT_ID


def test_given_security_hub_refuses_a_finding_then_the_channel_fails(aws: Any) -> None:
    client = aws.client("securityhub", region_name=REGION)

    class Refusing:
        def batch_import_findings(self, Findings: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
            answer: dict[str, Any] = client.batch_import_findings(Findings=[{**Findings[0], "Resources": []}])
            return answer

    with pytest.raises(ChannelError, match="refused"):
        SecurityHubChannel(Refusing(), PRODUCT_ARN).send(fixed_alert())


# ---------------------------------------------------------------------------- EventBridge


def bus_with_queue(aws: Any, bus: str, detail_type: str = EVENT_DETAIL_TYPE) -> tuple[Any, str]:
    """``bus`` (made unless ``default``) with a rule for trailgeo's ``detail_type`` into a queue of
    its own: the SQS client and the queue's URL."""
    sqs = aws.client("sqs", region_name=REGION)
    events = aws.client("events", region_name=REGION)
    name = "ocsf" if detail_type == OCSF_DETAIL_TYPE else "alerts"
    queue_url = sqs.create_queue(QueueName=f"{name}-from-{bus}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    if bus != "default":
        events.create_event_bus(Name=bus)
    events.put_rule(
        Name=f"trailgeo-{name}",
        EventBusName=bus,
        EventPattern=json.dumps({"source": ["trailgeo"], "detail-type": [detail_type]}),
    )
    events.put_targets(Rule=f"trailgeo-{name}", EventBusName=bus, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return sqs, queue_url


def received_events(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_given_a_bus_with_a_rule_when_an_alert_is_put_then_the_event_reaches_the_rule_target(
    aws: Any,
) -> None:
    sqs, queue_url = bus_with_queue(aws, "security")
    EventBridgeChannel(aws.client("events", region_name=REGION), "security").send(fixed_alert())
    (event,) = received_events(sqs, queue_url)
    assert event["source"] == "trailgeo"
    assert event["detail-type"] == "Unusual country for AWS command"
    assert event["detail"] == json.loads(fixed_alert().to_json())


def test_given_a_megabyte_user_agent_when_put_on_a_bus_then_the_detail_is_bounded_and_marked(
    aws: Any,
) -> None:
    detail = bounded_detail(hostile_alert())
    assert len(detail.encode()) <= EVENT_DETAIL_LIMIT
    document = json.loads(detail)
    assert document["truncated"] is True
    assert document["alert_id"] == ALERT_ID
    sqs, queue_url = bus_with_queue(aws, "default")
    EventBridgeChannel(aws.client("events", region_name=REGION), "default").send(hostile_alert())
    (event,) = received_events(sqs, queue_url)
    assert event["detail"]["truncated"] is True


def test_given_a_missing_bus_when_an_alert_is_put_then_the_channel_fails(aws: Any) -> None:
    with pytest.raises(ChannelError):
        EventBridgeChannel(aws.client("events", region_name=REGION), "no-such-bus").send(fixed_alert())


# ---------------------------------------------------------------------------- OCSF on EventBridge


def test_given_an_ocsf_bus_when_an_alert_is_sent_then_the_rule_target_gets_the_detection_finding(
    aws: Any,
) -> None:
    from tests.test_ocsf import problems

    sqs, queue_url = bus_with_queue(aws, "security-lake", OCSF_DETAIL_TYPE)
    OcsfChannel(aws.client("events", region_name=REGION), "security-lake", "0.1.0", REGION).send(
        fixed_alert()
    )
    (event,) = received_events(sqs, queue_url)
    assert (event["source"], event["detail-type"]) == ("trailgeo", "OCSF Detection Finding")
    assert event["detail"] == detection_finding(fixed_alert(), "0.1.0", REGION)
    assert problems(event["detail"]) == []
    assert event["detail"]["class_uid"] == 2004


def test_given_a_hostile_alert_when_sent_as_ocsf_then_the_event_is_bounded_and_valid(aws: Any) -> None:
    from tests.test_ocsf import problems

    sqs, queue_url = bus_with_queue(aws, "default", OCSF_DETAIL_TYPE)
    OcsfChannel(aws.client("events", region_name=REGION), "default", "0.1.0").send(hostile_alert())
    (event,) = received_events(sqs, queue_url)
    assert problems(event["detail"]) == []
    assert len(json.dumps(event["detail"]).encode()) < 64 * 1024


def test_given_a_missing_ocsf_bus_when_an_alert_is_sent_then_the_channel_fails(aws: Any) -> None:
    with pytest.raises(ChannelError, match="EventBridge"):
        OcsfChannel(aws.client("events", region_name=REGION), "no-such-bus", "0.1.0").send(fixed_alert())
