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
