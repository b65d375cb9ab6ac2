"""Lengths and widths as people read them: the one place their rounding is decided.

A centreline length is good to about a pixel and a width to about ±1 px, so printing
``100.6766 m`` (a tenth of a millimetre on a 1 mm GSD survey, worse on coarser ones) or
``3.072e+05 px`` claims a precision the measurement does not have and is hard to read.
Metres get centimetres, millimetres a tenth, pixels whole pixels (widths a tenth: a mean
width is an average of whole pixels); thousands are grouped. The console, report.html
and the asset table's text all format through here, so one figure reads the same everywhere.
"""

from __future__ import annotations

import math

# Decimals per unit: centimetres of a length in metres, a tenth of a millimetre, whole pixels.
_LENGTH_DECIMALS = {"m": 2, "mm": 1, "px": 0}


def _number(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    return "0" if decimals and float(text.replace(",", "")) == 0 else text


def format_length(value: float | None, unit: str | None) -> str:
    """``100.68 m``, ``307,200 px``; '-' when there is no value (nothing measured)."""
    if value is None or not math.isfinite(value):
        return "-"
    unit = unit or ""
    text = _number(value, _LENGTH_DECIMALS.get(unit, 2))
    return f"{text} {unit}".strip()


def format_width(value: float | None, unit: str | None) -> str:
    """A crack width: metres shown in millimetres (``1.3 mm``), pixels to a tenth (``2.5 px``)."""
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "m":
        return f"{_number(value * 1000, 1)} mm"
    return f"{_number(value, 1)} {unit or ''}".strip()


def format_gsd(gsd_m: float) -> str:
    """A ground sampling distance in millimetres, without trailing zeros (``5 mm``, ``0.8 mm``)."""
    return f"{gsd_m * 1000:.2f}".rstrip("0").rstrip(".") + " mm"
