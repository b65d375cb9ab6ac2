"""Counts as the console prints them: the noun agrees with the number ("1 raster", never "1 rasters")."""

from __future__ import annotations

from survey_cracks.deliver.console import counted, rasters_and_photos


def test_one_is_singular_and_every_other_count_plural():
    assert [counted(n, "raster") for n in (0, 1, 2)] == ["0 rasters", "1 raster", "2 rasters"]
    assert counted(1, "annotated photo") == "1 annotated photo" and counted(3, "annotated photo") == "3 annotated photos"
    assert counted(2, "index", "indices") == "2 indices" and counted(1, "index", "indices") == "1 index"


def test_what_outcomes_stand_for_is_counted_the_same_way():
    assert rasters_and_photos(1, 0, 0) == ["1 raster"]
    assert rasters_and_photos(0, 0, 0) == ["0 rasters"]
    assert rasters_and_photos(0, 1, 1) == ["1 photo in 1 collection"]
    assert rasters_and_photos(2, 6, 2) == ["2 rasters", "6 photos in 2 collections"]
