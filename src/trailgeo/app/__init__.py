"""Application layer: settings, dependency wiring and the detection run.

``settings`` (one pydantic model from the environment per cold start), ``wiring`` (the one place
ports meet adapters), ``runtime`` (the Lambdas' cold-start state), and the use cases: ``detect``,
``fanout``, ``notify``, ``backfill``, ``replay``, ``doctor``, ``policy``, ``tuning_watch``,
``operate``. The use-case packages ``detect`` and ``operate`` work over ports alone.

May import: `trailgeo.core`, `trailgeo.ports`, `trailgeo.observability`, `trailgeo.adapters`,
`boto3`, `botocore`, `msgspec`, `pydantic`, `aws_lambda_powertools`, `mypy_boto3_*` (types only);
the standard library always.
"""
