import numpy as np
import pytest
from rasterio.windows import Window

from survey_cracks.errors import RasterError
from survey_cracks.io.raster import PIXEL_TRANSFORM, inspect_raster, open_raster, read_patch, read_window
from tests.conftest import write_geotiff


def test_rgb_geotiff_is_georeferenced(tmp_path):
    path = write_geotiff(tmp_path / "a.tif", np.full((40, 50, 3), 100, np.uint8))
    info = inspect_raster(path)
    assert info.georeferenced and info.crs == "EPSG:32631"
    assert info.pixel_size == pytest.approx(0.01)
    assert (info.width, info.height, info.has_mask) == (50, 40, False)


def test_png_is_processed_in_pixel_coordinates(tmp_path):
    path = write_geotiff(tmp_path / "scan.png", np.full((40, 50, 3), 100, np.uint8), driver="PNG")
    info = inspect_raster(path)
    assert not info.georeferenced and info.crs is None
    assert info.transform == PIXEL_TRANSFORM


def test_grey_uint16_is_stretched_to_rgb(tmp_path):
    data = np.linspace(1000, 5000, 60 * 60).reshape(60, 60, 1).astype(np.uint16)
    path = write_geotiff(tmp_path / "g.tif", data)
    info = inspect_raster(path)
    assert info.band_indexes == (1, 1, 1) and info.dtype == "uint16"
    with open_raster(path) as src:
        rgb, valid = read_patch(src, info, Window(0, 0, 60, 60), 60)
    assert rgb.dtype == np.uint8 and valid.all()
    assert rgb[0, 0, 0] < 10 and rgb[-1, -1, 0] > 245
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_alpha_mask_marks_invalid_pixels(tmp_path):
    rgb = np.full((64, 64, 3), 120, np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[:, :32] = True
    path = write_geotiff(tmp_path / "m.tif", rgb, mask=mask)
    info = inspect_raster(path)
    assert info.has_mask
    with open_raster(path) as src:
        patch, valid = read_patch(src, info, Window(0, 0, 64, 64), 32)
    assert valid[:, :16].all() and not valid[:, 16:].any()
    assert (patch[:, 16:] == 120).all()  # outside: the valid pixels' mean colour, no dark edge


def test_window_beyond_small_raster_is_padded_invalid(tmp_path):
    path = write_geotiff(tmp_path / "s.tif", np.full((20, 30, 3), 200, np.uint8))
    info = inspect_raster(path)
    with open_raster(path) as src:
        patch, valid = read_patch(src, info, Window(0, 0, 64, 64), 64)
    assert valid[:20, :30].all() and not valid[20:].any() and not valid[:, 30:].any()
    assert patch[5, 5, 0] == 200 and patch[40, 40, 0] == 200


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_bytes(b"not a tiff at all"), "not a readable raster"),
    ],
)
def test_unreadable_files_get_clear_errors(tmp_path, make, expected):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(RasterError, match=expected) as info:
        inspect_raster(path)
    assert str(path) in info.value.message


def test_wrong_dtype_and_band_count(tmp_path):
    path = write_geotiff(tmp_path / "f.tif", np.zeros((10, 10, 3), np.float32))
    with pytest.raises(RasterError, match="data type float32"):
        inspect_raster(path)
    path = write_geotiff(tmp_path / "b5.tif", np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(RasterError, match="5 bands"):
        inspect_raster(path)


def test_empty_footprint(tmp_path):
    path = write_geotiff(tmp_path / "e.tif", np.zeros((32, 32, 3), np.uint8), nodata=0)
    with pytest.raises(RasterError, match="no valid pixels"):
        inspect_raster(path)


@pytest.mark.parametrize("window_size", [32, 48])
def test_strip_patches_equal_read_patch(tmp_path, window_size):
    """Inference cuts patches from strips; training reads them one by one: same pixels, same skips."""
    from survey_cracks.inference.dispatch import iter_patches
    from survey_cracks.tiling import patch_grid

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (100, 130, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:100, :130]
    footprint = (yy - 50) ** 2 + (xx - 65) ** 2 < 45**2  # a disc: corner windows partly or wholly outside
    path = write_geotiff(tmp_path / "disc.tif", rgb, mask=footprint)
    info = inspect_raster(path)
    grid = patch_grid(info.width, info.height, window_size, 16)
    with open_raster(path) as src:
        cut = dict(iter_patches(src, info, grid.offsets, window_size, 32, min_valid_fraction=0.6))
        for i in range(len(grid)):
            patch, valid = read_patch(src, info, grid.window(i), 32)
            if valid.mean() < 0.6:
                assert i not in cut
            else:
                np.testing.assert_array_equal(cut[i], patch)
    assert 0 < len(cut) < len(grid)


def test_shared_reader_lends_one_handle_reopens_a_changed_file_and_closes(tmp_path):
    """Window tasks in one worker read through one handle, so GDAL decodes shared blocks once."""
    import os
    import threading

    from survey_cracks.io.raster import close_shared_readers, shared_reader

    path = write_geotiff(tmp_path / "a.tif", np.full((64, 64, 3), 10, np.uint8))
    with shared_reader(path) as first:
        assert first.read(1)[0, 0] == 10
    with shared_reader(path) as again:
        assert again is first, "the same open dataset, with its cached blocks"
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with shared_reader(path):
            held.set()
            release.wait(10)

    other = threading.Thread(target=hold)
    other.start()
    held.wait(10)
    entered = threading.Event()

    def wait_for_it() -> None:
        with shared_reader(path):
            entered.set()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    assert not entered.wait(0.3), "one thread at a time: GDAL datasets are not thread-safe"
    release.set()
    other.join(10)
    waiter.join(10)
    assert entered.is_set()
    write_geotiff(path, np.full((64, 64, 3), 20, np.uint8))
    os.utime(path, ns=(1, 1))  # a change the size alone would not show
    with shared_reader(path) as changed:
        assert changed is not first and first.closed and changed.read(1)[0, 0] == 20
    close_shared_readers()
    assert changed.closed


@pytest.mark.parametrize("out_shape", [None, (90, 45)])
def test_read_window_gives_bands_1_2_3_as_r_g_b_inside_the_raster_and_zero_outside(tmp_path, out_shape):
    rows, cols = np.mgrid[0:40, 0:50]
    data = np.stack([rows * 5, cols * 5, np.full_like(rows, 200)], axis=-1).astype(np.uint8)
    path = write_geotiff(tmp_path / "rgb.tif", data)
    info = inspect_raster(path)
    window = Window(-10, 10, 30, 60)  # 10 columns left of the raster, 30 rows below it
    with open_raster(path) as src:
        rgb, valid = read_window(src, info, window, out_shape, fill=False)
    scale_r, scale_c = (1, 1) if out_shape is None else (out_shape[0] / 60, out_shape[1] / 30)
    inside = rgb[: round(30 * scale_r), round(10 * scale_c):]
    assert valid[: round(30 * scale_r), round(10 * scale_c):].all() and not valid[round(30 * scale_r):].any()
    assert (inside[..., 2] == 200).all() and (rgb[round(30 * scale_r):] == 0).all()
    if out_shape is None:
        np.testing.assert_array_equal(inside, data[10:40, 0:20])
    else:  # resampled: still increasing down (band 1) and across (band 2)
        assert (np.diff(inside[..., 0].astype(int), axis=0) >= 0).all() and (np.diff(inside[..., 1].astype(int), axis=1) >= 0).all()


def test_a_corrupt_tile_raises_a_picklable_pixel_read_error_naming_the_file(tmp_path):
    """The pipeline tells a broken file from a bug by this type, also when a Dask worker raised it (pickled)."""
    import pickle

    import rasterio

    from survey_cracks.errors import PixelReadError

    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / "cut.tif", rgb)
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes())
    info = inspect_raster(path)
    with open_raster(path) as src:
        read_window(src, info, Window(0, 0, 128, 128))  # an intact tile reads
        with pytest.raises(PixelReadError) as caught:
            read_window(src, info, Window(128, 128, 128, 128))
    assert isinstance(caught.value, RasterError) and caught.value.path == str(path)
    assert "truncated or corrupt" in caught.value.message and "re-copy or re-export" in caught.value.message
    assert caught.value.__context__ is None and caught.value.__cause__ is None  # GDAL's errors do not unpickle
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is PixelReadError and again.message == caught.value.message
