import numpy as np
import pytest
from rasterio.windows import Window

from survey_cracks.tiling import axis_offsets, block_windows, patch_grid, window_size_for_ground


def test_offsets_cover_axis_with_full_size_windows():
    offsets = axis_offsets(300, 128, 64)
    assert offsets.tolist() == [0, 64, 128, 172]
    assert offsets[-1] + 128 == 300


@pytest.mark.parametrize("length,size,stride", [(128, 128, 64), (129, 128, 64), (1000, 96, 48), (50, 128, 64)])
def test_window_count_formula_and_coverage(length, size, stride):
    offsets = axis_offsets(length, size, stride)
    expected = 1 if length <= size else int(np.ceil((length - size) / stride)) + 1
    assert len(offsets) == expected
    covered = np.zeros(length, bool)
    for off in offsets:
        covered[off : off + size] = True
    assert covered.all()


def test_grid_row_major_and_chunks():
    grid = patch_grid(300, 200, 128, 64)
    assert len(grid) == 4 * 3  # rows at 0, 64, 72 (last shifted inside)
    assert grid.window(1) == Window(64, 0, 128, 128)
    chunks = grid.chunks(5)  # a whole lattice row (4 windows) per task
    assert [len(c) for c in chunks] == [4, 4, 4]
    assert np.concatenate(chunks).tolist() == list(range(len(grid)))


def test_chunks_are_rectangles_of_bounded_width():
    grid = patch_grid(20000, 3000, 128, 64)
    chunks = grid.chunks(512, max_span_px=4096)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(grid)))  # each window exactly once
    for chunk in chunks:
        rows, cols = np.unique(chunk // len(grid.cols)), np.unique(chunk % len(grid.cols))
        assert len(chunk) == len(rows) * len(cols) <= 512  # a full rectangle
        assert grid.cols[cols[-1]] + grid.size - grid.cols[cols[0]] <= 4096


def test_intersecting_finds_exactly_overlapping_windows():
    grid = patch_grid(512, 512, 128, 64)
    block = Window(128, 128, 64, 64)
    hits = set(grid.intersecting(block).tolist())
    for i in range(len(grid)):
        row, col = grid.offsets[i]
        overlaps = row < 192 and row + 128 > 128 and col < 192 and col + 128 > 128
        assert (i in hits) == overlaps


def test_ground_size_window():
    assert window_size_for_ground(128, None, 0.01) == 128
    assert window_size_for_ground(128, 2.56, 0.01) == 256
    assert window_size_for_ground(128, 2.56, None) == 128


def test_blocks_tile_raster_exactly():
    blocks = block_windows(1000, 700, 512)
    assert sum(b.width * b.height for b in blocks) == 1000 * 700


def test_tapered_tasks_keep_every_window_once_in_order_and_shrink_the_tail():
    from survey_cracks.inference.dispatch import tapered

    grid = patch_grid(4000, 3000, 128, 64)
    chunks = grid.chunks(512)
    tasks = tapered(chunks, slots=2)
    assert np.concatenate(tasks).tolist() == np.concatenate(chunks).tolist()  # same windows, same order
    assert [len(t) for t in tasks[: len(chunks) - 4]] == [len(c) for c in chunks[:-4]]  # the head is untouched
    assert len(tasks) == len(chunks) - 4 + 16
    assert max(len(t) for t in tasks[-16:]) <= -(-max(len(c) for c in chunks[-4:]) // 4)
    assert [t.tolist() for t in tapered(chunks[:1], slots=8)] == [p.tolist() for p in np.array_split(chunks[0], 4)]


@pytest.mark.parametrize("width,height", [(448, 448), (640, 360), (1920, 1080), (4000, 3000), (100, 70), (1281, 33)])
def test_photo_windows_tile_the_photo_once_and_read_nothing_beyond_it_but_the_stride(width, height):
    from survey_cracks.tiling import ALIGN, photo_windows

    core, margin = 1024, 128
    windows = photo_windows(width, height, core, margin)
    seen = np.zeros((height, width), np.int32)
    for w in windows:
        c, r = w.core, w.read
        seen[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
        assert r.col_off % ALIGN == 0 and r.row_off % ALIGN == 0 and r.width % ALIGN == 0 and r.height % ALIGN == 0
        assert r.col_off >= 0 and r.row_off >= 0  # no context read beyond the image's edges ...
        assert r.col_off + r.width - width < ALIGN and r.row_off + r.height - height < ALIGN  # ... but the stride
        assert max(r.width, r.height) <= core + 2 * margin  # never more than a full read
        # the margin wherever a neighbour is: the core's inner sides have it all
        assert c.col_off - r.col_off in (0, margin) and c.row_off - r.row_off in (0, margin)
        assert (c.col_off - r.col_off == margin) == (c.col_off > 0)
    assert (seen == 1).all()
    if (width + ALIGN - 1) // ALIGN * ALIGN <= core + 2 * margin and (height + ALIGN - 1) // ALIGN * ALIGN <= core + 2 * margin:
        assert len(windows) == 1  # a photo no larger than a read is one window of its own size
    shapes = {(int(w.core.width), int(w.core.height)) for w in windows if w.core.col_off + w.core.width < width
              and w.core.row_off + w.core.height < height}
    assert len(shapes) <= 1  # inner cores of one size: equal shapes, no thin last row
