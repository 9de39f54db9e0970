"""trailgeo_tools: trailgeo's development tooling, never shipped in the Lambda layer.

The simulator (``simulate``), the evaluation harness (``evaluation``), the performance benchmark
(``bench``, ``bench_scale``, ``bench_s3``, ``bench_replay``, ``bench_common``) and the end-to-end
demo through moto (``demo``),
run with ``trailgeo-tools`` (``cli``). They use trailgeo; trailgeo never imports them.

``bench_replay``'s naive first-seen script reads the GeoIP database with ``maxminddb`` itself, as a
first script would (trailgeo's reader caches addresses).

May import: `trailgeo`, `trailgeo_tools`, `boto3`, `isal`, `maxminddb`; the standard library always.
"""
