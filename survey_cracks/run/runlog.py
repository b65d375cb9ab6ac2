"""A run's messages, for people and for machines.

Each message goes to the console (unless ``quiet`` and it is not an error or a
warning), to ``OUT/run.log`` as text and to ``OUT/run.log.jsonl`` as one JSON object
per line (time, level, message and any fields such as the raster). Lines are
appended and flushed one by one, so a killed run's logs end at its last message.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, TextIO

Level = Literal["info", "warning", "error"]
HUMAN_LOG, JSON_LOG = "run.log", "run.log.jsonl"


class RunLog:
    def __init__(self, echo: Callable[[str], None] = print, quiet: bool = False) -> None:
        self.echo = echo
        self.quiet = quiet
        self.files: list[tuple[TextIO, bool]] = []

    def attach(self, out: Path) -> None:
        """From now on, also append to OUT's two log files."""
        self.files = [(open(out / HUMAN_LOG, "a", encoding="utf-8"), False),
                      (open(out / JSON_LOG, "a", encoding="utf-8"), True)]

    def close(self) -> None:
        for fh, _ in self.files:
            fh.close()
        self.files = []

    def __call__(self, message: str, level: Level = "info", **fields: Any) -> None:
        if level != "info" and not message.startswith(level.upper()):
            message = f"{level.upper()} {message}"
        if not self.quiet or level != "info":
            self.echo(message)
        time = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for fh, as_json in self.files:
            line = json.dumps({"time": time, "level": level, "message": message, **fields}, default=str) if as_json \
                else f"{time} {message}"
            fh.write(line + "\n")
            fh.flush()

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
