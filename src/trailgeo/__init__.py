"""trailgeo: unusual country for an AWS command, from CloudTrail in S3, serverless."""

__version__ = "0.1.0"
