"""`trailgeo-tools bench --quick`: the benchmark's structure and its event counts, not speed."""

from __future__ import annotations

from pathlib import Path

from trailgeo_tools import bench


def test_given_a_tiny_corpus_when_the_benchmark_runs_then_every_measurement_counts_the_same_events(
    dbip_mmdb: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    args = bench.parse_args(["--quick", "--skip-moto", "--workdir", str(tmp_path), "--geoip", str(dbip_mmdb)])

    report = bench.run(args, out=lines.append)

    corpus = report.corpus
    assert args.events == bench.QUICK_EVENTS
    assert bench.QUICK_EVENTS <= corpus.events < 20_000
    assert not corpus.reused
    assert (tmp_path / "corpus-quick.json").is_file()
    measured = report.measurements
    assert {"pipeline", "floor", "naive"} <= set(measured)
    assert ("duckdb" in measured) != bool(report.duckdb_note)
    # Three independent ways of counting records (msgspec decode in detect, a byte marker after
    # ISA-L inflate, json.loads) over the same files, and the simulator's own count.
    assert (
        measured["pipeline"].events == measured["floor"].events == measured["naive"].events == corpus.events
    )
    for measurement in measured.values():
        assert measurement.events == corpus.events
        assert measurement.files == corpus.log_files
        assert measurement.seconds > 0
        assert measurement.peak_rss_mb >= measurement.rss_before_mb > 0
        assert measurement.core == bench.default_core()
    assert report.events_agree
    assert measured["pipeline"].details["events_geolocated"] > 0
    assert measured["floor"].details["inflated_bytes"] > corpus.gzip_bytes
    assert report.dynamo is None
    assert report.dynamo_note == "skipped (--skip-moto)"
    assert [t.name for t in report.targets] == [
        "pipeline events/s, one core",
        "pipeline / ISA-L floor",
        "pipeline / naive",
        "pipeline peak RSS",
        "events counted equal (correctness)",
    ]
    assert {t.verdict for t in report.targets} <= {"PASS", "MISS"}
    assert report.targets[-1].verdict == "PASS"
    text = "\n".join(lines)
    for expected in ("pipeline / floor:", "pipeline / naive:", "events/s", "peak RSS", "verdict"):
        assert expected in text

    again = bench.prepare_corpus(tmp_path, bench.QUICK_PLAN, args.events, lines.append)

    assert again.reused
    assert (again.key, again.events, again.log_files) == (corpus.key, corpus.events, corpus.log_files)


def test_given_the_window_recipe_when_events_are_shared_out_then_exact_and_skewed() -> None:
    """Given the 15-minute window's 150 accounts x 4 regions, when its 1,000,000 events are shared
    out by Zipf weight, then they sum exactly, every pair gets some, and the busiest gets the most."""
    pairs = bench.WINDOW_ACCOUNTS * len(bench.WINDOW_REGIONS)

    counts = bench._window_counts(pairs, bench.WINDOW_EVENTS)

    assert sum(counts) == bench.WINDOW_EVENTS == bench.TARGET_RSS_EVENTS
    assert min(counts) > 0
    assert counts[0] == max(counts) > 100 * min(counts)
    assert len(set(bench._window_accounts())) == bench.WINDOW_ACCOUNTS


def test_given_a_small_trail_when_fanned_out_in_the_benchmark_then_its_counters_equal_one_run(
    dbip_mmdb: Path, tmp_path: Path
) -> None:
    # Given two days of a small organization, written in the S3 layout
    from datetime import UTC, datetime

    from trailgeo_tools.bench_scale import fanout_lines, measure_fanout
    from trailgeo_tools.simulate import SimulationConfig, simulate, write_tree

    sim = simulate(SimulationConfig(start=datetime(2026, 3, 2, tzinfo=UTC), days=2, humans=4, digests=False))
    write_tree(sim, tmp_path)

    # When the fan-out measurement plans, runs every task and reduces (tasks of 200 files)
    measured = measure_fanout(str(tmp_path), str(dbip_mmdb), None, quiet=False)

    # Then every event was read once, by tasks, and the counters equal a single run's
    assert measured.tasks == -(-len(sim.log_files) // 200)
    assert measured.events == sim.events_count
    assert measured.files == len(sim.log_files)
    assert len(measured.task_seconds) == measured.tasks
    assert measured.counters_equal
    assert measured.counters > 0
    assert "counters equal to one single-Lambda run over the same files: yes" in fanout_lines(measured)[2]


def _rate(name: str, events_per_second: float) -> bench.Measurement:
    return bench.Measurement(name, name, int(events_per_second), 10, 1.0, 1.0, 1.0, None)


def test_given_a_ratio_target_above_what_decoding_alone_reaches_then_its_note_says_so() -> None:
    """Given a floor of 1,000,000 events/s and decoding alone at 400,000, when the floor target's
    note is written, then it names the 450,000 events/s the 45% target means and says no msgspec
    pipeline reaches it; with decoding at 500,000, the note does not say so."""
    floor, slow, fast = _rate("floor", 1_000_000), _rate("parse", 400_000), _rate("parse", 500_000)

    unreachable, reachable = bench._floor_note(slow, floor), bench._floor_note(fast, floor)

    assert "the target means 450,000 events/s, above parse alone (400,000)" in unreachable
    assert "out of reach" not in reachable
    assert "out of reach" in bench._naive_note(_rate("naive", 100_000), slow)
    assert "out of reach" not in bench._naive_note(_rate("naive", 60_000), slow)


def _write_trail(root: Path) -> list[str]:
    """A small organization trail on disk: 2 accounts x 2 regions x 2 days of log files, a digest
    and a folder that is no region, as S3 keys under ``root``."""
    keys = []
    for account in ("111122223333", "444455556666"):
        for region in ("us-east-1", "eu-west-1"):
            for day, stamp in (("2026/03/02", "20260302T2355Z"), ("2026/03/03", "20260303T0005Z")):
                for unique in ("A1", "B2", "C3"):
                    name = f"{account}_CloudTrail_{region}_{stamp}_{unique}.json.gz"
                    keys.append(f"AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail/{region}/{day}/{name}")
        keys.append(
            f"AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail-Digest/us-east-1/2026/03/03/"
            f"{account}_CloudTrail-Digest_us-east-1_x_us-east-1_20260303T0005Z.json.gz"
        )
        keys.append(f"AWSLogs/o-a1b2c3d4e5/{account}/CloudTrail/not-a-region/2026/03/03/junk.json.gz")
    for number, key in enumerate(keys):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b'{"Records":[]}' + b" " * number)
    return keys


def test_given_a_trail_when_listed_from_the_stand_in_then_the_adapter_sees_what_moto_gives(
    tmp_path: Path,
) -> None:
    """Given the same objects in moto's S3 and in the benchmark's stand-in S3, when the product's S3
    source lists a window and raw ListObjectsV2 pages are asked for (delimiter, start-after, pages
    of 2), then both answer the same keys, sizes, common prefixes and skips."""
    from datetime import UTC, datetime

    import boto3
    from moto import mock_aws

    from trailgeo.adapters.aws import S3LogSource
    from trailgeo_tools import bench_s3

    keys = _write_trail(tmp_path)
    start, end = datetime(2026, 3, 2, 23, 0, tzinfo=UTC), datetime(2026, 3, 3, 1, 0, tzinfo=UTC)

    def observe(client: object) -> tuple[object, ...]:
        source = S3LogSource(client, bench_s3.BUCKET, list_concurrency=4)  # type: ignore[arg-type]
        window = source.list_window(start, end)
        pages = client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
            Bucket=bench_s3.BUCKET,
            Prefix="AWSLogs/o-a1b2c3d4e5/111122223333/",
            PaginationConfig={"PageSize": 2},
        )
        raw = [([o["Key"] for o in p.get("Contents", [])], p["KeyCount"], p["IsTruncated"]) for p in pages]
        delimited = client.list_objects_v2(  # type: ignore[attr-defined]
            Bucket=bench_s3.BUCKET, Prefix="AWSLogs/o-a1b2c3d4e5/444455556666/", Delimiter="/"
        )
        after = client.list_objects_v2(  # type: ignore[attr-defined]
            Bucket=bench_s3.BUCKET, Prefix="AWSLogs/", StartAfter=keys[5], MaxKeys=3
        )
        return (
            sorted((o.key, o.delivered_at, o.size, o.account) for o in window.objects),
            dict(window.skipped),
            raw,
            [c["Prefix"] for c in delimited.get("CommonPrefixes", [])],
            [o["Key"] for o in after["Contents"]],
            after["IsTruncated"],
        )

    # Given moto's S3 with the objects
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=bench_s3.BUCKET)
        for key in keys:
            client.put_object(Bucket=bench_s3.BUCKET, Key=key, Body=(tmp_path / key).read_bytes())
        # When listed through moto
        from_moto = observe(client)

    # And through the stand-in over the same directory, without latency
    with bench_s3.stand_in_s3(tmp_path, get_ms=0, list_ms=0) as endpoint:
        standin = bench_s3.s3_client(endpoint, 8)
        from_standin = observe(standin)
        counts = bench_s3.request_counts(endpoint)
        body = standin.get_object(Bucket=bench_s3.BUCKET, Key=keys[3])["Body"].read()

    # Then they agree, and the stand-in counted its requests by type
    assert from_standin == from_moto
    assert len(from_moto[0]) == 24  # every log file: the digests and the junk folder skipped
    assert from_moto[1] == {"prefix_cloudtrail-digest": 2, "prefix_bad_region": 2}
    assert counts["ListObjectsV2"] > 10
    assert body == (tmp_path / keys[3]).read_bytes()


def test_given_a_small_organization_when_the_scale_benchmark_runs_then_both_modes_read_every_file(
    dbip_mmdb: Path, tmp_path: Path
) -> None:
    """Given one account x 17 regions x 3 deliveries from the stand-in S3 (no latency), when the scale
    benchmark runs List and Notifications, single Lambda and fan-out, then each reads every file once,
    Notifications sends no LIST, and the replay and the naive script count the same events."""
    from trailgeo_tools import bench_replay, bench_s3

    # When the scale benchmark runs
    lines: list[str] = []
    report = bench_s3.run_scale(
        tmp_path, dbip_mmdb, 1, lines.append, core=None, get_ms=0, list_ms=0, concurrencies=(2,)
    )

    # Then both modes read every file of the window, once each, and counted the same events
    files = report.corpus.log_files
    assert files == len(bench_s3.ORG_REGIONS) * bench_s3.WINDOW_SLOTS
    assert report.events_agree
    by_mode = {run.mode: run for run in report.runs}
    assert by_mode["List"].requests["GetObject"] == files == by_mode["Notifications"].requests["GetObject"]
    assert by_mode["List"].requests["ListObjectsV2"] >= 2 * len(bench_s3.ORG_REGIONS)
    assert "ListObjectsV2" not in by_mode["Notifications"].requests
    assert all(run.files == files for run in report.runs)
    assert {f.mode for f in report.fanout} == {"List", "Notifications"}
    assert all(f.files == files and len(f.task_seconds) == f.tasks for f in report.fanout)
    assert any("Notifications mode on one Lambda" in line for line in lines)

    # And the per-file measurement over the same files: naive and replay count alike
    shape = bench_replay.measure_shape("small", report.corpus.root, files, dbip_mmdb, None, 1)
    assert shape.events == shape.replay_events == report.corpus.events
    assert shape.stages is not None
    assert abs(sum(shape.stages.shares().values()) - 1.0) < 1e-9
    assert shape.stages.calls["read"] == files
    assert len(bench_replay.shape_lines(shape)) == 6
