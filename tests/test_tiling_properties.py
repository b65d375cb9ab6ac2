"""Property-based tests (hypothesis) of the window arithmetic, for random raster sizes, patch
sizes, overlaps, block sizes, processing scales and footprints.

Patch mode (`patch_grid` + the heatmap's blend): every pixel, footprint pixels included, lies
in a window; every window stays inside the raster (a raster smaller than a patch has one window
at the origin, read boundless by design: `raster.read_window`); the blend's weights, normalised,
sum to one, so a constant score comes back unchanged; block by block equals all at once.
Mask and dense modes (`context_windows`, `inference.source_core`): cores tile the raster
without gaps or overlaps, at every processing scale, and every read window holds its core.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from survey_cracks.inference.dispatch import source_core, window_sums
from survey_cracks.tiling import ALIGN, block_windows, context_windows, footprint_crop, patch_grid
from survey_cracks.vectors.heatmap import BlockBlender, blend_ramp, blend_weights

PROPERTIES = settings(max_examples=60, deadline=None)


@st.composite
def patch_layouts(draw):
    """(width, height, window size, stride): overlap from none to all but one pixel."""
    size = draw(st.integers(8, 96))
    stride = draw(st.integers(1, size))
    width = draw(st.integers(1, 400))
    height = draw(st.integers(1, 400))
    return width, height, size, stride


def footprint(draw, height: int, width: int) -> np.ndarray:
    """A random footprint: an ellipse, a rectangle or scattered pixels (True = valid), never empty."""
    kind = draw(st.sampled_from(["ellipse", "rectangle", "pixels"]))
    rr, cc = np.mgrid[:height, :width]
    if kind == "ellipse":
        cy, cx = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        ry, rx = draw(st.integers(1, max(1, height))), draw(st.integers(1, max(1, width)))
        mask = ((rr - cy) / ry) ** 2 + ((cc - cx) / rx) ** 2 <= 1
    elif kind == "rectangle":
        r0, c0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
        mask = (rr >= r0) & (rr < r0 + draw(st.integers(1, height))) & (cc >= c0) & (cc < c0 + draw(st.integers(1, width)))
    else:
        seed = draw(st.integers(0, 2**32 - 1))
        mask = np.random.default_rng(seed).random((height, width)) < draw(st.floats(0.001, 0.2))
    mask[draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] = True
    return mask


# ---------------------------------------------------------------------------------- patch mode


@PROPERTIES
@given(patch_layouts())
def test_patch_windows_cover_every_pixel_and_stay_inside(layout):
    width, height, size, stride = layout
    grid = patch_grid(width, height, size, stride)
    hits = np.zeros((height, width), np.int32)
    for row, col in grid.offsets:
        if height >= size:
            assert 0 <= row <= height - size, (row, grid)
        else:
            assert row == 0  # one window, read boundless (filled and marked invalid outside)
        if width >= size:
            assert 0 <= col <= width - size, (col, grid)
        else:
            assert col == 0
        hits[row : row + size, col : col + size] += 1
    assert hits.min() >= 1, "a pixel no window covers"
    # a regular lattice: steps of the stride except the last, shifted back inside
    for offsets, length in ((grid.rows, height), (grid.cols, width)):
        steps = np.diff(offsets)
        assert (steps[:-1] == stride).all() and (steps <= stride).all() and (steps > 0).all()
        assert len(offsets) == (1 if length <= size else -(-(length - size) // stride) + 1)


@PROPERTIES
@given(patch_layouts(), st.floats(0.0, 0.9), st.sampled_from([16, 32, 64, 128, 512]), st.integers(0, 2**32 - 1))
def test_blend_weights_sum_to_one_and_blocks_agree_with_a_brute_force_blend(layout, floor, block, seed):
    width, height, size, stride = layout
    grid = patch_grid(width, height, size, stride)
    ramp = blend_ramp(size, floor)
    scores = np.random.default_rng(seed).random(len(grid)).astype(np.float32)
    # brute force: each window's 2-D weight added over its pixels
    total = np.zeros((max(height, size), max(width, size)), np.float64)
    weight = np.zeros_like(total)
    patch_weight = blend_weights(size, floor).astype(np.float64)
    for (row, col), score in zip(grid.offsets, scores):
        total[row : row + size, col : col + size] += patch_weight * score
        weight[row : row + size, col : col + size] += patch_weight
    total, weight = total[:height, :width], weight[:height, :width]
    assert (weight > 0).all()

    blender, ones = BlockBlender(grid, scores, ramp), BlockBlender(grid, np.ones(len(grid), np.float32), ramp)
    blocks = block_windows(width, height, block)
    assert sum(int(b.width * b.height) for b in blocks) == width * height
    for window in blocks:
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        block_total, block_weight = blender.sums(window)
        np.testing.assert_allclose(block_weight, weight[rows, cols], rtol=1e-4)
        np.testing.assert_allclose(block_total / block_weight, total[rows, cols] / weight[rows, cols], rtol=1e-4, atol=1e-5)
        # the weights of the windows over a pixel, normalised, sum to one: a constant score comes back as it was
        one_total, one_weight = ones.sums(window)
        np.testing.assert_allclose(one_total / one_weight, 1.0, rtol=1e-5)
        # a blend is a weighted mean: never outside the scores that went into it
        assert (block_total / block_weight >= scores.min() - 1e-5).all()
        assert (block_total / block_weight <= scores.max() + 1e-5).all()


@st.composite
def layouts_with_footprints(draw):
    width, height, size, stride = draw(patch_layouts())
    width, height = min(width, 160), min(height, 160)  # brute force over every window: keep it small
    return width, height, size, stride, footprint(draw, height, width)


@PROPERTIES
@given(layouts_with_footprints())
def test_every_footprint_pixel_gets_a_blended_score_when_no_window_is_skipped(case):
    """With ``min_valid_fraction`` 0 a window is scored when it holds one footprint pixel (`iter_patches`);
    the blend then assesses every footprint pixel."""
    width, height, size, stride, valid = case
    grid = patch_grid(width, height, size, stride)
    padded = np.zeros((max(height, size), max(width, size)), bool)
    padded[:height, :width] = valid
    counts = np.array([padded[r : r + size, c : c + size].sum() for r, c in grid.offsets])
    # the pipeline's integral-image count agrees with the direct count (dense mode skips windows with it)
    if len(grid.rows) > 1 and len(grid.cols) > 1 and (np.diff(grid.rows) == stride).all() and (np.diff(grid.cols) == stride).all():
        lattice = window_sums(padded, size, stride, (len(grid.rows), len(grid.cols)))
        np.testing.assert_array_equal(lattice.ravel(), counts)
    scores = np.where(counts > 0, 0.5, np.nan).astype(np.float32)
    blender = BlockBlender(grid, scores, blend_ramp(size, 0.1))
    total, weight = blender.sums(Window(0, 0, width, height))
    assert (weight[valid] > 0).all(), "a footprint pixel left without a score"
    np.testing.assert_allclose(total[valid] / weight[valid], 0.5, rtol=1e-5)


# ---------------------------------------------------------------------------------- mask and dense modes


@st.composite
def context_layouts(draw):
    width, height = draw(st.integers(1, 700)), draw(st.integers(1, 700))
    core = ALIGN * draw(st.integers(1, 8))
    margin = ALIGN * draw(st.integers(0, 4))
    return width, height, core, margin


@PROPERTIES
@given(context_layouts())
def test_context_window_cores_tile_the_raster_and_reads_hold_their_cores(layout):
    width, height, core, margin = layout
    windows = context_windows(width, height, core, margin)
    hits = np.zeros((height, width), np.int32)
    shapes = set()
    for w in windows:
        c, r = w.core, w.read
        assert 0 <= c.row_off and c.row_off + c.height <= height and 0 <= c.col_off and c.col_off + c.width <= width
        assert c.width > 0 and c.height > 0
        assert c.row_off % ALIGN == 0 and c.col_off % ALIGN == 0, "cores keep the trunk's 32 px phase"
        assert r.row_off == c.row_off - margin and r.col_off == c.col_off - margin
        assert w.in_read == (slice(margin, margin + int(c.height)), slice(margin, margin + int(c.width)))
        assert r.row_off + r.height >= c.row_off + c.height + margin and r.col_off + r.width >= c.col_off + c.width + margin
        hits[int(c.row_off) : int(c.row_off + c.height), int(c.col_off) : int(c.col_off + c.width)] += 1
        assert r.height % ALIGN == 0 and r.width % ALIGN == 0, "the trunk takes multiples of its stride"
        assert r.height - c.height - 2 * margin < ALIGN and r.width - c.width - 2 * margin < ALIGN, \
            "no read larger than its core needs"
        if c.row_off + core < height and c.col_off + core < width:
            shapes.add((int(r.height), int(r.width)))
    assert (hits == 1).all(), "cores must tile the raster: no gap, no overlap"
    assert len(shapes) <= 1, "one network input shape for every window but the last row and column"


@PROPERTIES
@given(st.data(), context_layouts())
def test_footprint_crop_keeps_every_valid_core_pixel_with_its_margin_on_the_trunk_lattice(data, layout):
    """A window the footprint's edge crosses: the network sees the crop, which must hold each valid
    core pixel with ``margin`` px of context each side (or up to the read's edge), at the read's phase."""
    width, height, core, margin = layout
    windows = context_windows(width, height, core, margin)
    window = windows[data.draw(st.integers(0, len(windows) - 1))]
    read_h, read_w = int(window.read.height), int(window.read.width)
    valid = np.zeros((read_h, read_w), bool)
    top, left = margin, margin
    c_h, c_w = int(window.core.height), int(window.core.width)
    valid[top : top + c_h, left : left + c_w] = footprint(data.draw, c_h, c_w)
    if data.draw(st.booleans()):
        valid |= footprint(data.draw, read_h, read_w)  # valid context around the core too
    rows, cols = footprint_crop(window, valid)
    assert rows.start % ALIGN == 0 and cols.start % ALIGN == 0, "the crop keeps the trunk's 32 px phase"
    assert (rows.stop - rows.start) % ALIGN == 0 and (cols.stop - cols.start) % ALIGN == 0
    assert 0 <= rows.start < rows.stop <= read_h and 0 <= cols.start < cols.stop <= read_w
    need_r, need_c = np.nonzero(valid[top : top + c_h, left : left + c_w])
    need_r, need_c = need_r + top, need_c + left
    assert rows.start <= max(0, need_r.min() - margin) and rows.stop >= min(read_h, need_r.max() + 1 + margin)
    assert cols.start <= max(0, need_c.min() - margin) and cols.stop >= min(read_w, need_c.max() + 1 + margin)
    assert rows.stop - rows.start < need_r.max() - need_r.min() + 1 + 2 * margin + 2 * ALIGN, "no more than it needs"
    assert cols.stop - cols.start < need_c.max() - need_c.min() + 1 + 2 * margin + 2 * ALIGN, "no more than it needs"


@PROPERTIES
@given(st.integers(1, 300), st.integers(1, 300), st.floats(0.25, 4.0), st.integers(1, 4), st.integers(0, 2))
def test_cores_on_the_processing_grid_tile_the_source_raster_at_any_scale(width, height, scale, core_steps, margin_steps):
    """Mask mode at ``scale``: windows on the processing grid, cores brought back to source pixels."""
    info = SimpleNamespace(width=width, height=height)
    windows = context_windows(int(np.ceil(width * scale)), int(np.ceil(height * scale)), ALIGN * core_steps,
                              ALIGN * margin_steps)
    hits = np.zeros((height, width), np.int32)
    for w in windows:
        target = source_core(info, w, scale)
        if target is None:
            continue
        assert target.width > 0 and target.height > 0
        assert 0 <= target.row_off and target.row_off + target.height <= height
        assert 0 <= target.col_off and target.col_off + target.width <= width
        hits[int(target.row_off) : int(target.row_off + target.height),
             int(target.col_off) : int(target.col_off + target.width)] += 1
    assert (hits == 1).all(), "source cores must tile the raster: no gap, no overlap"


def test_a_stride_larger_than_the_patch_is_refused():
    """Such a stride leaves strips no patch covers: nodata in the heatmap without a word."""
    import pydantic
    import pytest

    from survey_cracks.config import TilingConfig

    assert TilingConfig(patch_size=128, stride=128).step == 128
    with pytest.raises(pydantic.ValidationError, match="stride 160 is larger than patch_size 128"):
        TilingConfig(patch_size=128, stride=160)
