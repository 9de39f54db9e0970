"""trailgeo: unusual country for an AWS command, from CloudTrail in S3, serverless.

The package's own modules: ``ports`` (the interfaces the application needs and the domain errors),
``observability`` (Powertools logger, metrics, tracer), ``cli`` (the operator's ``trailgeo``
command, a composition root like the Lambda handlers in functions/). The layers below each say
what they may import; tests/test_layering.py holds every package to its line.

May import: `trailgeo`, `boto3`, `botocore`, `msgspec`, `aws_lambda_powertools`; the standard library
always.
"""

__version__ = "0.1.0"
