"""Adapters: the only modules that talk to AWS, the file system or the GeoIP database.

Each implements a port of ``trailgeo.ports`` and turns the service's errors (``ClientError``
codes) into its domain errors; ``memory`` holds the in-memory fakes that the contract tests
(tests/test_contract_*.py) hold to the same promises. Adapters never import the application.
Powertools' Parameters and Idempotency utilities are AWS clients too (the notifier's Slack secret
and delivery records: ``channels``, ``deliveries``).

May import: `trailgeo.core`, `trailgeo.ports`, `trailgeo.observability`, `boto3`, `botocore`,
`maxminddb`, `msgspec`, `pydantic`, `aws_lambda_powertools`, `mypy_boto3_*` (types only); the
standard library always.
"""
