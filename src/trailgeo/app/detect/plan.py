"""Planning a run: which day prefixes it lists, which files it reads, in which batches, under which
run ids.

The window's day prefixes are listed every run; the ones only the late tolerance keeps in play
(yesterday's, once the window no longer reaches it) by the first run of each hour to complete
(``late_prefixes``), reaching back to the hour of the last complete run, so that a late file is
read within the hour and none is missed whichever runs fail.

Takeovers of runs that died first (found from their run records), then the new files of the
look-back window (the ledger says which), claimed batch by batch under a lease; a batch whose run
record would be too large is halved; files a run has no time left for are deferred to the next.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.observability import logger
from trailgeo.ports import BatchTooLargeError, LatePrefixes, LogObject

# Batches are not claimed with less time than this left; their files stay new for the next run.
SAFETY_SECONDS = 60.0
# How far back a run catches up after an outage; the ledger keeps entries for 14 days.
MAX_CATCH_UP = timedelta(days=7)


def late_prefixes(
    end: datetime, watermark: datetime | None, window_start: datetime, every: timedelta, lookback: timedelta
) -> LatePrefixes:
    """Whether the run ending at ``end`` lists the day prefixes only the late tolerance keeps in
    play, and for files landed since when. Stateless, from the watermark (the last run that
    processed its whole window) alone: the first run of each ``every`` (an hour) to complete lists
    them. A run whose ``every`` already holds the watermark leaves them: a run of its hour listed
    them and completed. Otherwise (a new hour, the first run, a catch-up, or the hour's earlier runs
    failed or deferred files) it lists them for files landed since the start of the watermark's
    ``every`` (the last run that listed them and completed ended there or later: every complete
    run since left them, so none of them moved the watermark out of that ``every``) or the window's
    start, whichever is earlier, one ``every`` more: a file a run every 15 minutes would have read
    within the late tolerance is still read, at most an hour later. After an outage the bound goes
    back as far as the first run of the hour after the watermark's would have (its window starts
    ``lookback`` before it): the late tolerance counts from ``since``, so a catch-up, whose window
    starts later, would otherwise refuse a file named at the edge of the tolerance that the
    schedule would have read."""
    if watermark is not None and watermark >= window_start and _floor(watermark, every) >= _floor(end, every):
        return LatePrefixes(listed=False)
    if watermark is None:
        return LatePrefixes(listed=True, since=window_start - every)
    hour = _floor(watermark, every)
    return LatePrefixes(listed=True, since=min(window_start, hour, hour + every - lookback) - every)


def _floor(moment: datetime, every: timedelta) -> datetime:
    """The start of ``moment``'s ``every`` (from the epoch, as ``intake.reconcile_due`` counts)."""
    step = max(60, int(every.total_seconds()))
    seconds = int(moment.timestamp())
    return datetime.fromtimestamp(seconds - seconds % step, tz=UTC)


def run_id_for(scheduled_at: datetime, keys: list[str]) -> str:
    digest = hashlib.sha256(scheduled_at.isoformat().encode())
    for key in sorted(keys):
        digest.update(b"\x00" + key.encode())
    return digest.hexdigest()[:24]


def plan_batches(
    objects: list[LogObject],
    scheduled_at: datetime,
    deps: Dependencies,
    options: RunOptions,
    report: RunReport,
    *,
    takeovers: bool = True,
) -> Iterator[tuple[list[str], str, bool]]:
    """Yield (keys, run_id, takeover) batches: takeovers of runs that died first, then new files.

    A dead run is found from its run record, not from the listing: its files may have left the
    look-back by the time its lease expires. Event-driven runs (``takeovers`` False) leave dead
    runs to the scheduled ones: a batch that kills whoever reads it then stops no arrival's run.
    """
    now = deps.clock()
    for run_id, intended in deps.ledger.expired_runs(now) if takeovers else ():
        if _out_of_time(deps, report, len(intended)):
            return  # the dead run stays as it is: a later run takes it over
        won = deps.ledger.claim(intended, run_id, now + options.lease, now, takeover=True)
        report.files_recovered += len(won)
        logger.warning("taking over an interrupted run", run_id=run_id, files=len(won))
        if won:
            yield won, run_id, True
        else:
            deps.ledger.complete({}, run_id, now)  # everything was finished or handed back
    by_key = {obj.key: obj for obj in objects}
    status = deps.ledger.status(list(by_key))
    fresh: list[str] = []
    for key in sorted(by_key, key=lambda k: (by_key[k].delivered_at, k)):
        entry = status.get(key)
        if entry is None:
            fresh.append(key)
        elif entry.state == "claimed":
            report.files_in_progress_elsewhere += 1
    size = options.batch_files
    batches = deque(fresh[start : start + size] for start in range(0, len(fresh), size))
    while batches:
        keys = batches.popleft()
        if _out_of_time(deps, report, len(keys) + sum(map(len, batches))):
            return  # not claimed: still new for the next run
        run_id = run_id_for(scheduled_at, keys)
        lease_until = deps.clock() + options.lease
        # The run record goes first: a crash between it and the claims loses nothing.
        try:
            deps.ledger.begin(run_id, keys, lease_until, deps.clock())
        except BatchTooLargeError:
            if len(keys) == 1:  # one key (at most 1,024 bytes) always fits
                raise
            # Keys longer than CloudTrail's (a bucket writer's names) can pack over the run record's
            # limit: the batch is halved rather than every run failing on it.
            logger.warning("batch split in two: its run record would be too large", files=len(keys))
            batches.extendleft((keys[len(keys) // 2 :], keys[: len(keys) // 2]))
            continue
        won = deps.ledger.claim(keys, run_id, lease_until, deps.clock())
        report.files_in_progress_elsewhere += len(keys) - len(won)
        report.files_new += len(won)
        if won:
            yield won, run_id, False


def _out_of_time(deps: Dependencies, report: RunReport, files: int) -> bool:
    """Checked before a batch is claimed, so that files it will not reach are not held by a lease."""
    if deps.time_left() >= SAFETY_SECONDS:
        return False
    report.files_deferred += files
    logger.warning("deferring files to the next run", files=files)
    return True
