"""The one atomic write, the windows journal, and a staged heatmap kept for resume."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from survey_cracks.config import HeatmapConfig
from survey_cracks.io.raster import inspect_raster
from survey_cracks.outputs import atomic_write, write_json
from survey_cracks.run.journal import FinishedWindow, WindowJournal, checksum
from survey_cracks.vectors.heatmap import StagedHeatmap, staged_heatmap_problem
from tests.conftest import write_geotiff


def test_atomic_write_replaces_on_success_and_leaves_nothing_on_error(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"n": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("stop")
    assert path.read_text() == '{\n  "n": 1\n}\n' and sorted(tmp_path.iterdir()) == [path]
    with atomic_write(path, fsync=True) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".")
        tmp.write_text("new")
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]


def test_journal_is_reopened_only_for_its_own_header_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "j"
    journal = WindowJournal(path, {"inputs": "a"})
    journal.add(FinishedWindow(3, (0, 0, 4, 4), 7))
    journal.add(FinishedWindow(5))
    assert not journal.due()  # 2 windows, a moment ago
    journal.commit()
    with open(path, "a") as fh:
        fh.write('{"i": 9, "co')  # a power cut while appending
    again, why = WindowJournal.reopen(path, {"inputs": "a"})
    assert again is not None and why == ""
    assert again.finished == {3: FinishedWindow(3, (0, 0, 4, 4), 7), 5: FinishedWindow(5)}
    assert again.finished[3].written and not again.finished[5].written
    assert path.read_text().endswith("}\n")
    other, why = WindowJournal.reopen(path, {"inputs": "b"})
    assert other is None and "other inputs" in why
    assert WindowJournal.reopen(tmp_path / "none", {"inputs": "a"}) == (None, "no windows journal")


def test_an_interrupted_staged_heatmap_is_kept_and_reopened_with_its_pixels(tmp_path):
    info = inspect_raster(write_geotiff(tmp_path / "r.tif", np.full((300, 200, 3), 90, np.uint8)))
    config = HeatmapConfig(block_size=256)
    levels = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8) % 200
    window = Window(100, 0, 100, 100)
    with pytest.raises(KeyboardInterrupt):
        with StagedHeatmap(tmp_path / "heatmap.tif", info, config) as staged:
            staged.write_levels(window, levels)
            staged.flush()
            raise KeyboardInterrupt
    assert staged.staging.is_file() and staged_heatmap_problem(tmp_path / "heatmap.tif", info, config) is None
    assert staged_heatmap_problem(tmp_path / "heatmap.tif", info, HeatmapConfig(block_size=512)) == \
        "staged heatmap of another grid"
    with StagedHeatmap(tmp_path / "heatmap.tif", info, config, resume=True) as staged:
        assert checksum(staged.levels(window)) == checksum(levels)
        assert np.isnan(staged.read(Window(0, 0, 100, 100))).all()  # never written: nodata
        staged.publish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap.tif", "r.tif"]
    (tmp_path / ".heatmap.staging.tif").write_bytes(b"half")
    assert "unreadable" in staged_heatmap_problem(tmp_path / "heatmap.tif", info, config)
