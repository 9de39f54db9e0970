"""The tuning document from an SSM parameter (String or SecureString), and its versions."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from trailgeo.core.tuning import Tuning, TuningError
from trailgeo.core.tuning_changes import TuningVersion
from trailgeo.observability import logger


class SsmClient(Protocol):
    """The one call used from a boto3 SSM client (``boto3.client("ssm")``)."""

    def get_parameter(self, *, Name: str, WithDecryption: bool = ...) -> Mapping[str, Any]: ...  # noqa: N803

    def get_paginator(self, operation_name: str) -> Any: ...


def parameter_arn(name: str, region: str | None) -> str:
    """The ARN IAM wants for ``name`` (a name, a path or already an ARN; ``:version`` selectors dropped)."""
    if name.startswith("arn:"):
        return name
    path = name.split(":", 1)[0].lstrip("/")
    return f"arn:aws:ssm:{region or '<region>'}:<account-id>:parameter/{path}"


@dataclass(frozen=True, slots=True)
class SsmTuningSource:
    client: SsmClient

    def load(self, name: str) -> Tuning:
        """The parameter's value, decrypted and validated. Raises :class:`TuningError` with what to fix."""
        current = self.current(name)
        return Tuning.parse(current.text, source=f"SSM parameter {name} (version {current.version})")

    def current(self, name: str) -> TuningVersion:
        """The parameter's value, decrypted, not validated. Raises :class:`TuningError`."""
        try:
            response = self.client.get_parameter(Name=name, WithDecryption=True)
        except ClientError as exc:
            raise TuningError(self._explain(exc, name)) from exc
        except BotoCoreError as exc:
            raise TuningError(f"SSM parameter {name}: could not be read: {exc}") from exc
        parameter = response["Parameter"]
        kind, version = parameter.get("Type"), parameter.get("Version")
        if kind not in {"String", "SecureString"}:
            raise TuningError(
                f"SSM parameter {name}: is a {kind}; store the tuning as a String or SecureString"
            )
        logger.info("tuning loaded", source="ssm", parameter=name, parameter_version=version, type=kind)
        return TuningVersion(
            int(version or 0), str(parameter["Value"]), "", parameter.get("LastModifiedDate")
        )

    def versions(self, name: str, wanted: Collection[int]) -> dict[int, TuningVersion]:
        """The ``wanted`` versions still in the parameter's history (SSM keeps the last 100), with
        who wrote each (``ssm:GetParameterHistory``). Raises :class:`TuningError`."""
        found: dict[int, TuningVersion] = {}
        try:
            pages = self.client.get_paginator("get_parameter_history").paginate(
                Name=name, WithDecryption=True
            )
            for page in pages:
                for entry in page.get("Parameters", []):
                    version = int(entry.get("Version", 0))
                    if version in wanted:
                        found[version] = TuningVersion(
                            version,
                            str(entry.get("Value", "")),
                            str(entry.get("LastModifiedUser", "")),
                            entry.get("LastModifiedDate"),
                        )
        except ClientError as exc:
            raise TuningError(self._explain(exc, name)) from exc
        except BotoCoreError as exc:
            raise TuningError(f"SSM parameter {name}: its history could not be read: {exc}") from exc
        return found

    def _explain(self, exc: ClientError, name: str) -> str:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code == "ParameterNotFound":
            return f"SSM parameter {name}: not found (check the name and the region)"
        if code in {"AccessDeniedException", "AccessDenied"}:
            arn = parameter_arn(name, getattr(getattr(self.client, "meta", None), "region_name", None))
            return (
                f"SSM parameter {name}: access denied: the function's role needs ssm:GetParameter on {arn}, "
                "and, for a SecureString encrypted with a customer managed KMS key, kms:Decrypt on that key "
                f"(AWS said: {message})"
            )
        if code in {"InvalidKeyId", "KMSAccessDeniedException"} or code.startswith("KMS"):
            return (
                f"SSM parameter {name}: {code}: the SecureString's KMS key cannot be used; the function's "
                f"role needs kms:Decrypt on it and the key must be enabled (AWS said: {message})"
            )
        return f"SSM parameter {name}: {code}: {message}"
