"""Planning a run: which files it reads, in which batches, under which run ids.

Takeovers of runs that died first (found from their run records), then the new files of the
look-back window (the ledger says which), claimed batch by batch under a lease; a batch whose run
record would be too large is halved; files a run has no time left for are deferred to the next.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta

from trailgeo.app.detect.context import Dependencies, RunOptions, RunReport
from trailgeo.observability import logger
from trailgeo.ports import BatchTooLargeError, LogObject

# Batches are not claimed with less time than this left; their files stay new for the next run.
SAFETY_SECONDS = 60.0
# How far back a run catches up after an outage; the ledger keeps entries for 14 days.
MAX_CATCH_UP = timedelta(days=7)


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
