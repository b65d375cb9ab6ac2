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
