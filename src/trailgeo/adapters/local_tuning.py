"""The tuning document from a file deployed with the stack (TOML, or JSON)."""

from __future__ import annotations

from pathlib import Path

from trailgeo.core.tuning import Tuning, TuningError
from trailgeo.observability import logger

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
