"""trailgeo_tools: trailgeo's development tooling, never shipped in the Lambda layer.

The simulator (``simulate``), the evaluation harness (``evaluation``), the performance benchmark
(``bench``, ``bench_scale``, ``bench_common``) and the end-to-end demo through moto (``demo``),
run with ``trailgeo-tools`` (``cli``). They use trailgeo; trailgeo never imports them.

May import: `trailgeo`, `trailgeo_tools`, `boto3`, `isal`; the standard library always.
"""
