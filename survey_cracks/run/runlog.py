"""A run's messages, for people and for machines.

Each message goes to the console (unless ``quiet`` and it is not an error or a
warning), to ``OUT/run.log`` as text and to ``OUT/run.log.jsonl`` as one JSON object
per line (time, level, message and any fields such as the raster). The two files are
the standard `logging` module's FileHandlers on a logger of the run's own (it does not
propagate, so the application's logging setup neither sees nor changes these lines);
a FileHandler flushes each record, so a killed run's logs end at its last message.
"""

from __future__ import annotations

import itertools
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

Level = Literal["info", "warning", "error"]
HUMAN_LOG, JSON_LOG = "run.log", "run.log.jsonl"
_LEVELS: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_RUNS = itertools.count()  # each RunLog's logger gets a name of its own: two runs in one process never share files


def _time(record: logging.LogRecord) -> str:
    """The record's time in UTC, ISO 8601 to the millisecond (e.g. 2026-12-06T15:15:48.123+00:00)."""
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``run.log``'s line: ``<time> <message>``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_time(record)} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """``run.log.jsonl``'s line: {"time", "level", "message", and the record's ``fields``}; values JSON cannot hold as text."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        return json.dumps({"time": _time(record), "level": record.levelname.lower(), "message": record.getMessage(), **fields},
                          default=str)


class RunLog:
    def __init__(self, echo: Callable[[str], None] = print, quiet: bool = False) -> None:
        self.echo = echo
        self.quiet = quiet
        self.logger = logging.getLogger(f"survey_cracks.run.log{next(_RUNS)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)

    def attach(self, out: Path) -> None:
        """From now on, also append to OUT's two log files."""
        self.close()
        for name, formatter in ((HUMAN_LOG, TextFormatter()), (JSON_LOG, JsonFormatter())):
            handler = logging.FileHandler(out / name, mode="a", encoding="utf-8")
            handler.setFormatter(formatter)
            self.logger.addHandler(handler)

    def close(self) -> None:
        for handler in list(self.logger.handlers):
            self.logger.removeHandler(handler)
            handler.close()

    def __call__(self, message: str, level: Level = "info", **fields: Any) -> None:
        if level != "info" and not message.startswith(level.upper()):
            message = f"{level.upper()} {message}"
        # Echoed here, not by a logging handler: an echo that fails (a closed console) fails the call, as it always did.
        if not self.quiet or level != "info":
            self.echo(message)
        # The message is passed as the format string without arguments: a '%' in it is kept as is.
        self.logger.log(_LEVELS[level], message, extra={"fields": fields})

    def always(self, message: str, **fields: Any) -> None:
        """An info line shown even when quiet: the one that says why the run stopped."""
        quiet, self.quiet = self.quiet, False
        try:
            self(message, **fields)
        finally:
            self.quiet = quiet

    def warning(self, message: str, **fields: Any) -> None:
        self(message, "warning", **fields)

    def error(self, message: str, **fields: Any) -> None:
        self(message, "error", **fields)
