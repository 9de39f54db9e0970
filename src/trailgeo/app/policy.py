"""``trailgeo policy``: what the account owning the trail bucket must grant trailgeo's role.

For a cross-account deployment (trailgeo in a security-tooling account, the trail bucket in the
log-archive account) the bucket policy, and for an SSE-KMS trail the key policy, must allow the
role that the detector and its fan-out workers share (``DetectorRole``, stack output
``DetectorRoleArn``). The statements mirror the role's own in template.yaml (``ListTrailLogs``,
``ReadTrailLogs``, ``DecryptTrailLogs``): granting more would widen what a stolen role can read,
granting less breaks the runs. Pure: no AWS call here; the CLI reads a stack's outputs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from trailgeo.ports import TrailgeoError

Kind = Literal["bucket", "kms", "all"]
ROLE_OUTPUT = "DetectorRoleArn"
# The stack parameters that say which bucket, prefix and key the role was granted.
STACK_PARAMETERS = {"bucket": "TrailBucketName", "prefix": "TrailPrefix", "kms_key_arn": "TrailKmsKeyArn"}

_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):iam::(?P<account>\d{12}):role/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64}$"
)
_KEY_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):\d{12}:key/[a-zA-Z0-9-]+$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # the template's TrailBucketName pattern
# In a policy's Resource and StringLike values, * and ? are wildcards and ${...} a policy variable:
# a prefix holding one would grant more than the trail's folder.
_PREFIX_FORBIDDEN = re.compile(r"[*?$\x00-\x1f\x7f]")


class PolicyError(TrailgeoError):
    """The inputs cannot make a correct policy; the message names the option and what to give."""


@dataclass(frozen=True, slots=True)
class PolicyInputs:
    role_arn: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    kms_key_arn: str | None = None

    def completed_by(self, other: PolicyInputs) -> PolicyInputs:
        """These inputs, each one missing taken from ``other`` (options given win over a stack's)."""
        return replace(
            self,
            role_arn=self.role_arn or other.role_arn,
            bucket=self.bucket or other.bucket,
            prefix=self.prefix if self.prefix is not None else other.prefix,
            kms_key_arn=self.kms_key_arn or other.kms_key_arn,
        )


def stack_inputs(stack: Mapping[str, Any]) -> PolicyInputs:
    """The role, bucket, prefix and key of one stack of a CloudFormation DescribeStacks answer."""
    name = stack.get("StackName", "?")
    outputs = {o.get("OutputKey"): o.get("OutputValue") for o in stack.get("Outputs", [])}
    role = outputs.get(ROLE_OUTPUT)
    if not role:
        raise PolicyError(
            f"stack {name} has no {ROLE_OUTPUT} output (deployed before trailgeo added it): "
            "update the stack, or give --role-arn"
        )
    parameters = {p.get("ParameterKey"): p.get("ParameterValue") for p in stack.get("Parameters", [])}
    values = {field: parameters.get(key) for field, key in STACK_PARAMETERS.items()}
    return PolicyInputs(
        role_arn=str(role),
        bucket=values["bucket"] or None,
        prefix=values["prefix"],
        kms_key_arn=values["kms_key_arn"] or None,
    )


def normalized_prefix(prefix: str) -> str:
    """The trail's S3 key prefix as the stack's TrailPrefix: empty, or ending with one "/"."""
    if _PREFIX_FORBIDDEN.search(prefix):
        raise PolicyError(
            f"--prefix {prefix!r}: must not contain *, ?, $ or control characters "
            "(wildcards and policy variables in a policy would grant more than the trail's folder)"
        )
    value = prefix.strip().lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


@dataclass(frozen=True, slots=True)
class Policies:
    role_arn: str
    partition: str
    bucket: str
    prefix: str
    kms_key_arn: str | None

    @classmethod
    def of(cls, inputs: PolicyInputs) -> Policies:
        role = _ROLE_ARN.match(inputs.role_arn or "")
        if role is None:
            raise PolicyError(
                f"--role-arn {inputs.role_arn!r}: must be an IAM role ARN, arn:aws:iam::ACCOUNT:role/NAME "
                f"(the stack output {ROLE_OUTPUT}; not an assumed-role session ARN)"
            )
        if not inputs.bucket or not _BUCKET.match(inputs.bucket):
            raise PolicyError(f"--bucket {inputs.bucket!r}: must be the trail bucket's name")
        partition = role["partition"]
        key = inputs.kms_key_arn
        if key is not None:
            match = _KEY_ARN.match(key)
            if match is None:
                raise PolicyError(
                    f"--kms-key-arn {key!r}: must be a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/ID "
                    "(not an alias)"
                )
            if match["partition"] != partition:
                raise PolicyError(f"--kms-key-arn {key!r}: not in the role's partition ({partition})")
        return cls(
            inputs.role_arn or "", partition, inputs.bucket, normalized_prefix(inputs.prefix or ""), key
        )

    @property
    def logs(self) -> str:
        """Where the trail's files are: ``<prefix>AWSLogs/``, the only folder the role may read."""
        return f"{self.prefix}AWSLogs/"

    def bucket_policy(self) -> dict[str, Any]:
        """A whole bucket policy document; its statements are merged into the bucket's own policy."""
        bucket_arn = f"arn:{self.partition}:s3:::{self.bucket}"
        principal = {"AWS": self.role_arn}
        return {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "TrailgeoListTrailLogs",
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": "s3:ListBucket",
                    "Resource": bucket_arn,
                    # The detector lists <prefix>AWSLogs/ (with a delimiter) and prefixes below it.
                    "Condition": {"StringLike": {"s3:prefix": [self.logs, f"{self.logs}*"]}},
                },
                {
                    "Sid": "TrailgeoReadTrailLogs",
                    "Effect": "Allow",
                    "Principal": principal,
                    "Action": "s3:GetObject",
                    # CloudTrail's files only, in both layouts (IAM's * spans the "/"), as the role asks
                    "Resource": f"{bucket_arn}/{self.logs}*/CloudTrail/*",
                },
                {
                    # AWS's recommendation for trail buckets: nobody reads or writes them over plain HTTP.
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                },
            ],
        }

    def key_policy_statement(self) -> dict[str, Any]:
        """One statement for the trail key's policy: kms:Decrypt for the role, only through S3.

        In a key policy ``Resource: "*"`` means this key. An SSE-KMS key is in its bucket's region,
        so the S3 endpoint of the key's region is the only service the role decrypts through (the
        role's own statement allows ``s3.*.amazonaws.com``; both must allow a call across accounts).
        """
        if self.kms_key_arn is None:
            raise PolicyError("the key policy statement needs --kms-key-arn (the trail bucket's SSE-KMS key)")
        region = self.kms_key_arn.split(":")[3]
        return {
            "Sid": "TrailgeoDecryptTrailLogs",
            "Effect": "Allow",
            "Principal": {"AWS": self.role_arn},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
        }

    def document(self, kind: Kind | None = None) -> dict[str, Any]:
        """``bucket``: the bucket policy; ``kms``: the key policy statement; ``all``: both, under
        ``bucket_policy`` and ``key_policy_statement``. Default: all when a key is known."""
        kind = kind or ("all" if self.kms_key_arn else "bucket")
        if kind == "bucket":
            return self.bucket_policy()
        if kind == "kms":
            return self.key_policy_statement()
        return {"bucket_policy": self.bucket_policy(), "key_policy_statement": self.key_policy_statement()}

    def notes(self, kind: Kind | None = None) -> list[str]:
        """How to apply the document (for stderr: stdout carries the JSON alone)."""
        kind = kind or ("all" if self.kms_key_arn else "bucket")
        notes = []
        if kind in ("bucket", "all"):
            notes.append(
                f"merge these statements into the policy of bucket {self.bucket} "
                f"(aws s3api get-bucket-policy --bucket {self.bucket}): put-bucket-policy replaces the "
                "whole policy, and CloudTrail's own AWSCloudTrailAclCheck and AWSCloudTrailWrite statements "
                "must stay"
            )
            notes.append(
                "DenyInsecureTransport is the TLS-only deny AWS recommends for trail buckets: "
                "keep one (skip it if the policy already denies aws:SecureTransport false)"
            )
        if kind in ("kms", "all"):
            notes.append(
                f"add the key statement to the policy of {self.kms_key_arn} "
                f"(aws kms get-key-policy --key-id {self.kms_key_arn} --policy-name default); "
                "the role's own policy asks for kms:Decrypt on it when the stack's TrailKmsKeyArn is set"
            )
        return notes
