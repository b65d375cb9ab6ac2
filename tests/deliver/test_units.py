"""Lengths and widths as the console, report.html and the asset table print them (deliver.units)."""

from __future__ import annotations

import math

from survey_cracks.deliver.units import format_gsd, format_length, format_width


def test_lengths_are_rounded_to_what_the_unit_measures_not_to_float_noise():
    assert format_length(100.6766, "m") == "100.68 m"  # centimetres, not a tenth of a millimetre
    assert format_length(307200.3, "px") == "307,200 px"  # whole pixels, grouped, never 3.072e+05
    assert format_length(12345.678, "m") == "12,345.68 m"
    assert format_length(0.001, "m") == "0 m"
    assert format_length(None, "m") == format_length(math.nan, "px") == "-"


def test_widths_in_millimetres_when_metric_and_to_a_tenth_of_a_pixel_otherwise():
    assert format_width(0.00123, "m") == "1.2 mm"
    assert format_width(0.0936, "m") == "93.6 mm"
    assert format_width(13.06, "px") == "13.1 px"
    assert format_width(None, "m") == "-"


def test_gsd_without_trailing_zeros():
    assert format_gsd(0.005) == "5 mm" and format_gsd(0.00125) == "1.25 mm" and format_gsd(0.0008) == "0.8 mm"
