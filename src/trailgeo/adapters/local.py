"""A local directory laid out like the trail bucket, and a JSON-lines alert file."""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from trailgeo.core.alerts import Alert
from trailgeo.core.keys import KeyKind, TrailKey, parse_key
from trailgeo.observability import logger
from trailgeo.ports import LatePrefixes, ListedWindow, LogObject, ObjectGoneError

_NEVER = datetime.min.replace(tzinfo=UTC)
_READ_CHUNK = 1 << 20
_EXPECTED_KEYS = frozenset({f"key_{KeyKind.DIGEST.value}", f"key_{KeyKind.INSIGHT.value}"})


@dataclass(slots=True)
class LocalLogSource:
    """Files under ``root`` whose relative paths are S3 keys (``AWSLogs/...``)."""

    root: Path
    _index: list[tuple[TrailKey, int]] = field(default_factory=list)
    _skipped: Counter[str] = field(default_factory=Counter)
    _times: list[datetime] = field(default_factory=list)
    _unreported: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) not yet in a window
    _root_prefix: str = ""  # str(root) and a separator: keys are appended to it
    _objects: list[LogObject] = field(default_factory=list)  # the index's, made once

    def __post_init__(self) -> None:
        if not self.root.is_dir():
            raise NotADirectoryError(f"log directory not found: {self.root}")
        self._root_prefix = str(self.root) + os.sep
        # os.scandir, not Path.rglob: a replay of an organization indexes hundreds of thousands of
        # small files, and Path objects (made, compared to sort, made relative) cost more than the
        # scan itself. Keys sort as the paths did (part by part), and the index by delivery time.
        found: list[tuple[str, int]] = []
        _scan(self.root, "", found)
        found.sort(key=lambda item: item[0].split("/"))
        for key, size in found:
            parsed = parse_key(key)
            if parsed.kind is KeyKind.LOG:
                self._index.append((parsed, size))
            else:
                self._skipped[f"key_{parsed.kind.value}"] += 1
                self._unreported.append((parsed.key, f"key_{parsed.kind.value}"))
        self._index.sort(key=lambda item: (item[0].delivered_at or _NEVER, item[0].key))
        self._times = [parsed.delivered_at or _NEVER for parsed, _ in self._index]
        # Each file's LogObject made once: a replay lists every file in each of the ticks of its
        # look-back (8 with the default two hours), and a window is then one slice of this list.
        self._objects = [
            LogObject(parsed.key, parsed.delivered_at or _NEVER, size, parsed.account)
            for parsed, size in self._index
        ]

    @property
    def skipped_keys(self) -> Counter[str]:
        """Objects that are not CloudTrail log files (digests, Insight, others), by kind."""
        return Counter(self._skipped)

    @property
    def delivery_times(self) -> list[datetime]:
        return list(self._times)

    def list_window(
        self,
        start: datetime,
        end: datetime,
        late: LatePrefixes | None = None,  # noqa: ARG002 - the port's: a directory has no late files
    ) -> ListedWindow:
        times = self._times
        window = ListedWindow()
        # Objects that are not log files have no delivery time: the first window reports them.
        # Digests and Insight files sit in every trail bucket (S3 listing skips their prefixes
        # whole): counted and logged once per kind; anything else is logged key by key.
        examples: dict[str, str] = {}  # reason -> its first key, named in the line
        for key, reason in self._unreported:
            window.skipped[reason] += 1
            if reason in _EXPECTED_KEYS:
                examples.setdefault(reason, key)
            else:
                logger.info("key skipped", key=key, reason=reason)
        for reason, example in examples.items():
            logger.info("keys skipped", reason=reason, keys=window.skipped[reason], key=example)
        self._unreported.clear()
        window.objects = self._objects[bisect_right(times, start) : bisect_right(times, end)]
        return window

    def read(self, key: str) -> bytes:
        # A plain string path and os.read: pathlib and a file object cost more than the read itself
        # on a replay's small files (measured: 15, then 8, then 6 microseconds a file).
        try:
            descriptor = os.open(self._root_prefix + key, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise ObjectGoneError(key) from exc
        try:
            chunks = []
            while chunk := os.read(descriptor, _READ_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)  # one chunk: the same object, not a copy
        finally:
            os.close(descriptor)


def _scan(directory: Path | str, prefix: str, found: list[tuple[str, int]]) -> None:
    """Every file under ``directory`` as (key relative to the root, size), depth first."""
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):  # as rglob: a linked folder is not walked
                _scan(entry.path, f"{prefix}{entry.name}/", found)
            elif entry.is_file(follow_symlinks=True):
                found.append((prefix + entry.name, entry.stat().st_size))


@dataclass(slots=True)
class JsonLinesAlertSink:
    """Writes one alert document per line."""

    stream: IO[str]
    count: int = 0

    def publish(self, alert: Alert) -> str:
        self.stream.write(alert.to_json() + "\n")
        self.stream.flush()
        self.count += 1
        return f"line-{self.count}"
