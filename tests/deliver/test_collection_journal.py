"""The collection's journal (photos.jsonl) read a line at a time: last line per photo wins, a torn line is skipped."""

from __future__ import annotations

import json

from survey_cracks.deliver.collection import JOURNAL, CollectionWriter, compact_journal, iter_journal, read_journal


def line(name: str, value: int) -> str:
    return json.dumps({"inputs": str(value), "report": {"raster": name}, "row": {"photo": name, "value": value}}) + "\n"


def test_the_last_whole_line_of_each_photo_in_the_order_photos_first_appear(tmp_path):
    torn = line("c", 9)[:20]  # a kill in the middle of a write, cut inside a character too
    (tmp_path / JOURNAL).write_bytes((line("b", 1) + line("a", 2) + line("b", 3) + "é\n").encode()[:-2] + b"\n"
                                     + line("c", 4).encode() + torn.encode())
    entries = list(iter_journal(tmp_path))
    assert [(name, entry["row"]["value"]) for name, entry in entries] == [("b", 3), ("a", 2), ("c", 4)]
    assert read_journal(tmp_path) == dict(entries)


def test_no_journal_reads_as_no_photos(tmp_path):
    assert list(iter_journal(tmp_path)) == [] and read_journal(tmp_path) == {}


def test_compaction_keeps_the_last_lines_of_the_photos_kept(tmp_path):
    (tmp_path / JOURNAL).write_text(line("a", 1) + line("b", 2) + line("a", 3) + line("c", 4))
    compact_journal(tmp_path, {"a", "c"})
    assert (tmp_path / JOURNAL).read_text() == line("a", 3) + line("c", 4)


def test_a_line_written_after_a_torn_one_is_kept(tmp_path):
    (tmp_path / JOURNAL).write_text(line("a", 1) + line("b", 2)[:30])  # killed while writing b
    writer = CollectionWriter(tmp_path)
    writer.start({"a"})
    writer.add("c", None, None, json.loads(line("c", 3)))
    writer.flush()
    assert [(name, entry["row"]["value"]) for name, entry in iter_journal(tmp_path)] == [("a", 1), ("c", 3)]
