"""RunLog: the console, OUT/run.log (text) and OUT/run.log.jsonl (JSON lines) of a run."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from survey_cracks.run.runlog import HUMAN_LOG, JSON_LOG, JsonFormatter, RunLog, TextFormatter

TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00"


def test_formatters_write_the_text_line_and_the_json_object():
    record = logging.LogRecord("run", logging.WARNING, __file__, 1, "WARNING 50% of a <raster>", None, None)
    record.fields = {"raster": "a.tif", "path": Path("/x/a.tif")}
    assert re.fullmatch(rf"{TIME} WARNING 50% of a <raster>", TextFormatter().format(record))
    event = json.loads(JsonFormatter().format(record))
    assert list(event) == ["time", "level", "message", "raster", "path"] and re.fullmatch(TIME, event["time"])
    assert event | {"time": ""} == {"time": "", "level": "warning", "message": "WARNING 50% of a <raster>", "raster": "a.tif",
                                    "path": "/x/a.tif"}


def test_runlog_echoes_as_asked_and_appends_both_files_line_by_line(tmp_path):
    echoed: list[str] = []
    log = RunLog(echo=echoed.append, quiet=True)
    log("before the files")
    log.attach(tmp_path)
    log("started", raster="r1")
    log.warning("slow disk")
    log.error("ERROR already prefixed", raster="r2")
    # flushed per line: readable before close
    assert len((tmp_path / HUMAN_LOG).read_text().splitlines()) == 3
    log.close()
    log("after close")
    assert echoed == ["WARNING slow disk", "ERROR already prefixed"]  # quiet: warnings and errors only
    text = (tmp_path / HUMAN_LOG).read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in text] == ["started", "WARNING slow disk", "ERROR already prefixed"]
    assert all(re.match(TIME + " ", line) for line in text)
    events = [json.loads(line) for line in (tmp_path / JSON_LOG).read_text().splitlines()]
    assert [(e["level"], e["message"], e.get("raster")) for e in events] == [
        ("info", "started", "r1"), ("warning", "WARNING slow disk", None), ("error", "ERROR already prefixed", "r2")]
    assert [e["time"] for e in events] == [line.split(" ", 1)[0] for line in text]  # one time per message in both files
    loud: list[str] = []
    RunLog(echo=loud.append)("hello")
    assert loud == ["hello"]
