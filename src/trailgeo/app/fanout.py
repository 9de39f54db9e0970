"""Fan-out mode: one scheduled planner, many workers of the same code, one reduce.

When one Lambda cannot read a window in time (a large organization trail), the scheduled run
plans as usual (ledger, run records, claims) and hands each batch to workers through SQS, in
tasks of ``files_per_task`` files. Each worker reads and aggregates its task's files, stores the
partial aggregate (its snapshot, with the files' outcomes) and marks the task done. The worker
that finishes a batch's last task merges every partial into one aggregate and finishes the batch
exactly as a single Lambda does (:func:`trailgeo.app.detect.finish_batch`): scored against the
history before the batch, alerts queued, counters committed once, the run record closed. So the
alerts and the tables are those of single-Lambda mode on the same data.

Failures: a task that cannot read a file now (throttling, 5xx) fails and SQS delivers it again
(its files stay claimed by the run); a task that keeps failing goes to the dead-letter queue and
the batch's run lease runs out, so a later scheduled run takes the batch over in-process, under
the same run id (counters remember the runs they applied: nothing is counted twice). A reduce
that dies is retried with the last task's message once its reduce lease has expired.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from trailgeo.app.detect import (
    Dependencies,
    RunOptions,
    RunReport,
    detect,
    finish_batch,
    new_aggregate,
    publish_pending,
    read_batch,
)
from trailgeo.core.aggregate import RunAggregate
from trailgeo.core.chunks import bounded_runs
from trailgeo.core.records import gc_paused
from trailgeo.observability import logger
from trailgeo.ports import FanoutTask, FanoutTracker, PartialStore, TaskQueue, TransientReadError

DEFAULT_FILES_PER_TASK = 200
# A task is one SQS message (at most 256 KiB): its keys are cut by bytes as well as by count, so
# long keys (a long trail prefix, an organization trail, or names a bucket writer made long: S3
# keys run to 1,024 bytes) make more tasks, never a message SQS refuses. The rest of the task
# (run id, time, numbers) takes about 100 bytes; the margin covers it.
MAX_TASK_KEY_BYTES = 256 * 1024 - 4096
# A fanned-out batch's run record is not taken over before this: long enough for SQS to deliver
# a failing task again until it dead-letters (template.yaml: visibility timeout 960 s x
# maxReceiveCount 5 = 80 minutes; tests/test_deploy_limits.py keeps the two in step).
FANOUT_LEASE = timedelta(hours=2)
# As long as a Lambda can run (900 s): a reducer cannot outlive it, and SQS's next delivery of
# the last task (visibility timeout 960 s) finds it expired and reduces again.
REDUCE_LEASE = timedelta(seconds=900)


class Partial(msgspec.Struct, frozen=True):
    """What one task leaves for the reduce: its aggregate and what the read said of each file."""

    aggregate: bytes
    outcomes: dict[str, str]
    files_read: int
    bytes_read: int
    files_skipped: dict[str, int]
    records_skipped: dict[str, int]  # by the decoder (the aggregate keeps its own)


@dataclass(slots=True)
class Fanout:
    queue: TaskQueue
    partials: PartialStore
    tracker: FanoutTracker
    files_per_task: int = DEFAULT_FILES_PER_TASK
    holder: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(slots=True)
class TaskReport:
    run_id: str
    index: int
    tasks: int
    files_read: int = 0
    events: int = 0
    tasks_done: int = 0
    reduced: RunReport | None = None  # set on the invocation that finished the batch
    refused: int = 0  # keys of the task its run does not hold: the task was not sent by a planner
    finished: bool = False  # the task's batch was closed already (a late redelivery): nothing to do


def plan(scheduled_at: datetime, deps: Dependencies, options: RunOptions, fanout: Fanout) -> RunReport:
    """The scheduled run in fan-out mode: plan, then send each new batch to the workers."""

    def dispatch(keys: list[str], run_id: str, at: datetime, report: RunReport) -> None:
        parts = task_parts(keys, fanout.files_per_task)
        fanout.tracker.open(run_id, len(parts), deps.clock())
        fanout.queue.send([FanoutTask(run_id, at, i, len(parts), part) for i, part in enumerate(parts)])
        report.tasks_dispatched += len(parts)
        logger.info("batch fanned out", run_id=run_id, files=len(keys), tasks=len(parts))

    return detect(scheduled_at, deps, options, dispatch=dispatch)


def task_parts(keys: list[str], files_per_task: int, max_bytes: int = MAX_TASK_KEY_BYTES) -> list[list[str]]:
    """``keys`` in order, in tasks of at most ``files_per_task`` keys whose JSON list takes at most
    ``max_bytes`` (each key quoted and escaped, and a comma)."""
    return bounded_runs(  # each key quoted and escaped, and a comma; 2 for the list's brackets
        keys,
        lambda key: len(msgspec.json.encode(key)) + 1,
        max_count=files_per_task,
        max_size=max_bytes,
        base=2,
    )


def run_task(task: FanoutTask, deps: Dependencies, options: RunOptions, fanout: Fanout) -> TaskReport:
    """One worker invocation: read and aggregate a task's files; reduce if it was the last.

    The task must name files its run claimed (the ledger: claims are made only for the keys of
    the run record). A task naming others was not sent by the planner (a principal that can send
    to the queue): it is refused, not read, and counted, so that no forged task can have files
    counted twice, counted under a run that never claimed them, or never counted.
    """
    status = deps.ledger.status(task.keys)
    foreign = [key for key in task.keys if (entry := status.get(key)) is None or entry.run_id != task.run_id]
    if foreign:
        logger.error(
            "fan-out task refused: it names files its run does not hold",
            run_id=task.run_id[:200],
            index=task.index,
            keys=len(foreign),
            first=foreign[0][:300],
        )
        return TaskReport(task.run_id, task.index, task.tasks, refused=len(foreign))
    if all(status[key].state == "done" for key in task.keys):
        logger.info("fan-out task of a finished batch: nothing to do", run_id=task.run_id, index=task.index)
        return TaskReport(task.run_id, task.index, task.tasks, finished=True)
    scheduled_at = task.scheduled_at.astimezone(UTC)
    report = RunReport(scheduled_at=scheduled_at, window_start=scheduled_at, window_end=scheduled_at)
    # The collector stays off until the task's aggregate is dropped (as in detect): re-enabled
    # while it is alive, its first pass would scan all of it.
    with gc_paused():
        events, partial = _read_task(task, deps, options, report)
    fanout.partials.put(task.run_id, task.index, partial)
    done = fanout.tracker.task_done(task.run_id, task.index)
    result = TaskReport(task.run_id, task.index, task.tasks, report.files_read, events, tasks_done=done)
    logger.info("fan-out task done", run_id=task.run_id, index=task.index, done=done, tasks=task.tasks)
    if done < task.tasks:
        return result
    now = deps.clock()
    if not fanout.tracker.claim_reduce(task.run_id, fanout.holder, now + REDUCE_LEASE, now):
        return result  # another invocation is reducing this batch
    result.reduced = reduce_batch(task, deps, options, fanout)
    return result


def _read_task(
    task: FanoutTask, deps: Dependencies, options: RunOptions, report: RunReport
) -> tuple[int, bytes]:
    """A task's events and its partial, encoded: everything else it read is dropped on return."""
    aggregate, outcomes, released = read_batch(task.keys, deps, options, report)
    if released:
        # Not handed back: the files belong to this batch. SQS delivers the task again later.
        raise TransientReadError(
            f"{len(released)} file(s) of task {task.index} of {task.run_id} unreadable now"
        )
    partial = Partial(
        aggregate=aggregate.snapshot(),
        outcomes=outcomes,
        files_read=report.files_read,
        bytes_read=report.bytes_read,
        files_skipped=dict(report.files_skipped),
        records_skipped=dict(report.records_skipped),
    )
    return aggregate.events, msgspec.msgpack.encode(partial)


def reduce_batch(task: FanoutTask, deps: Dependencies, options: RunOptions, fanout: Fanout) -> RunReport:
    """Merge every task's partial (in task order) and finish the batch as a single Lambda would."""
    with gc_paused():  # until the merged aggregate is dropped, as in detect
        report, outcomes = _merge_and_finish(task, deps, options, fanout)
    if options.alerting:
        publish_pending(deps, report, options)
    fanout.partials.discard(task.run_id, task.tasks)
    logger.info(
        "fanned-out batch finished",
        run_id=task.run_id,
        tasks=task.tasks,
        files=len(outcomes),
        events=report.events,
        alerts_raised=report.alerts_raised,
    )
    return report


def _merge_and_finish(
    task: FanoutTask, deps: Dependencies, options: RunOptions, fanout: Fanout
) -> tuple[RunReport, dict[str, str]]:
    aggregate, outcomes, report = merge_partials(task, deps, options, fanout.partials)
    finish_batch(aggregate, outcomes, task.run_id, report.scheduled_at, deps, options, report)
    return report, outcomes


def merge_partials(
    task: FanoutTask, deps: Dependencies, options: RunOptions, partials: PartialStore
) -> tuple[RunAggregate, dict[str, str], RunReport]:
    """One aggregate of the batch from its tasks' partials, their files' outcomes, and a report of
    the reads the workers did (files, bytes, skips): what ``finish_batch`` is then given."""
    scheduled_at = task.scheduled_at.astimezone(UTC)
    report = RunReport(scheduled_at=scheduled_at, window_start=scheduled_at, window_end=scheduled_at)
    aggregate = new_aggregate(deps, options)
    outcomes: dict[str, str] = {}
    for index in range(task.tasks):
        try:
            partial = msgspec.msgpack.decode(partials.get(task.run_id, index), type=Partial)
        except msgspec.DecodeError as exc:
            raise ValueError(f"partial {index} of {task.run_id} is corrupt: {exc}") from exc
        aggregate.merge_snapshot(partial.aggregate)
        outcomes.update(partial.outcomes)
        report.files_read += partial.files_read
        report.bytes_read += partial.bytes_read
        report.files_skipped.update(Counter(partial.files_skipped))
        report.records_skipped.update(Counter(partial.records_skipped))
    report.files_new = len(outcomes)
    return aggregate, outcomes, report
