"""The tuning document from a file deployed with the stack (TOML, or JSON), and such a file as the
operator commands edit it (:class:`FileTuningStore`)."""

from __future__ import annotations

import os
from pathlib import Path

from trailgeo.core.tuning import Tuning, TuningError
from trailgeo.observability import logger
from trailgeo.ports import FILE_TYPE, ConcurrentChangeError, StoredTuning

MAX_TUNING_BYTES = 1024 * 1024  # a tuning file is a few KB; anything near this is a mistake


def load_tuning_file(path: Path) -> Tuning:
    """Read and validate ``path``. Raises :class:`TuningError` naming the file and what is wrong."""
    try:
        size = path.stat().st_size
        if size > MAX_TUNING_BYTES:
            raise TuningError(
                f"{path}: {size} bytes, more than the {MAX_TUNING_BYTES} a tuning file may have"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TuningError(f"{path}: tuning file not found") from None
    except IsADirectoryError:
        raise TuningError(f"{path}: is a directory, not a tuning file") from None
    except PermissionError:
        raise TuningError(f"{path}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise TuningError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    tuning = Tuning.parse(text, source=str(path))
    logger.info("tuning loaded", source="file", path=str(path))
    return tuning


class FileTuningStore:
    """A local tuning file as a :class:`~trailgeo.ports.TuningStore` (``trailgeo alerts allow
    --tuning-file``): its version is its modification time in nanoseconds, compared right before the
    write, which replaces the file whole (a temporary file renamed over it); a new file is created
    only if none appeared meanwhile."""

    def read(self, name: str) -> StoredTuning | None:
        path = Path(name)
        try:
            version = path.stat().st_mtime_ns
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return StoredTuning(version=version, type=FILE_TYPE, text=text)

    def write(
        self,
        name: str,
        text: str,
        *,
        expected_version: int | None,
        type: str,  # noqa: A002, ARG002 - a file has no type of its own
        key_id: str | None = None,  # noqa: ARG002
        tier: str | None = None,  # noqa: ARG002
    ) -> int:
        path = Path(name)
        if expected_version is None:
            try:
                with path.open("x", encoding="utf-8") as created:
                    created.write(text)
            except FileExistsError:
                raise ConcurrentChangeError(
                    f"tuning file {name}: created by someone else while we edited it: nothing was "
                    "written; run the command again"
                ) from None
            return path.stat().st_mtime_ns
        now = path.stat().st_mtime_ns if path.exists() else 0
        if now != expected_version:
            raise ConcurrentChangeError(
                f"tuning file {name}: changed while we edited it: nothing was written; run the command again"
            )
        staged = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        staged.write_text(text, encoding="utf-8")
        staged.replace(path)
        return path.stat().st_mtime_ns
