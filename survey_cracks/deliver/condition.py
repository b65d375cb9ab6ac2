"""Condition classes of an asset from its cracks: the rule file and how a value is classed.

Rules are YAML validated into the typed models below (`configs/assets.yaml` lists every
default; unknown keys are errors). Each *material* (an asset's ``material`` column, else
``default_material``) has a width rule, a density rule or both; every class has a
``state`` (1 = good, higher = worse, as bridge condition states count) and the asset's
condition is its worst resolved class.

Defaults, from published practice:

* **concrete, width** — the AASHTO *Manual for Bridge Element Inspection* condition
  states for cracking of reinforced concrete (defect 1130): insignificant cracks under
  0.012 in (0.3 mm) = CS1, moderate 0.012-0.05 in (0.3-1.3 mm) = CS2, wide over 0.05 in
  (1.3 mm) = CS3, of the widest crack.
* **pavement, density** — crack length per surveyed area (m/m²), the density PCI
  ratings (ASTM D6433) enter their deduct curves with (there in percent: 1 % = 0.01
  m/m²). The default classes are the decades of that axis: under 0.01 m/m², 0.01-0.1,
  over 0.1. They are a screening default, not a PCI: a PCI needs the distress
  severities and the deduct curves.
* **pavement, width** — the severity widths of ASTM D6433 for longitudinal and
  transverse cracking: low under 10 mm, medium 10-75 mm, high over 75 mm.

A width is only classed when the GSD resolves it: a centreline width is a whole
number of pixels, good to about ``uncertainty_px`` (1 px), so the measured width ±
that many pixels must fall inside one class; otherwise the class reads
``unresolved at 5 mm GSD: 0.0-10.0 mm spans the 0.3 mm limit`` instead of a guess. An
asset without cracks is only classed as the first class when a pixel is finer than that
class's limit: at 5 mm GSD a 1 mm crack may leave no trace, so "no crack found" there reads
``unresolved at 5 mm GSD: no crack found, but the 0.3 mm limit is finer than a pixel``.
The asset table carries each width's ±``uncertainty_px`` (``width_uncertainty``).
Rasters without georeferencing have no ground scale: their classes read
``unresolved: no ground scale (pixel coordinates)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from survey_cracks.config import StrictModel, load_config
from survey_cracks.deliver.units import format_gsd

NO_SCALE = "unresolved: no ground scale (pixel coordinates)"


class LimitClass(StrictModel):
    """One class: values below ``upper`` (and at or above the previous class's) fall in it."""

    name: str
    state: int = Field(ge=1, le=5, description="condition state: 1 good, 2 fair, 3 poor, 4 severe")
    upper: float | None = Field(None, gt=0, description="exclusive upper limit (mm for widths, m/m² for densities); none on the last class")


def _ascending(classes: list[LimitClass]) -> None:
    uppers = [c.upper for c in classes]
    if not classes or uppers[-1] is not None or None in uppers[:-1]:
        raise ValueError("classes need an upper limit each except the last, which has none")
    if any(b <= a for a, b in zip(uppers[:-2], uppers[1:-1])):  # type: ignore[operator]
        raise ValueError("class upper limits must increase")


class ClassRule(StrictModel):
    """Classes by upper limit, ascending, and where they come from."""

    classes: list[LimitClass]
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> "ClassRule":
        _ascending(self.classes)
        return self


class WidthRule(ClassRule):
    """Classes of the widest crack (or the mean width), in millimetres."""

    measure: Literal["max_width", "mean_width"] = "max_width"
    uncertainty_px: float = Field(1.0, ge=0, description="a measured width is good to this many pixels either way")


class DensityRule(ClassRule):
    """Classes of crack length per surveyed area, in m/m²."""


class MaterialRules(StrictModel):
    width: WidthRule | None = None
    density: DensityRule | None = None


class CrackTypeRules(StrictModel):
    """How a centreline is typed against its asset's main axis (see crack_types)."""

    longitudinal_max_deg: float = Field(30.0, ge=0, le=90, description="at most this far from the main axis: longitudinal")
    transverse_min_deg: float = Field(60.0, ge=0, le=90, description="at least this far: transverse; between: diagonal")
    network_min_junctions: int = Field(3, ge=1, description="a connected crack with this many junctions or more ...")
    network_max_spacing_m: float = Field(0.5, gt=0, description="... and at most this much centreline per junction is a network")
    network_max_spacing_px: float = Field(100.0, gt=0, description="the same in pixels, for rasters without georeferencing")

    @model_validator(mode="after")
    def _order(self) -> "CrackTypeRules":
        if self.transverse_min_deg < self.longitudinal_max_deg:
            raise ValueError("transverse_min_deg must be >= longitudinal_max_deg")
        return self


class ChangeRules(StrictModel):
    """When two dates' cracks are the same crack, and when one has grown (see compare)."""

    match_distance_px: float = Field(6.0, gt=0, description="cracks closer than this (pixels of the coarser GSD) are the same crack")
    min_overlap: float = Field(0.3, gt=0, le=1, description="share of the shorter centreline that must lie within that distance")
    length_growth_px: float = Field(10.0, ge=0, description="grown: longer by more than this many pixels ...")
    length_growth_fraction: float = Field(0.1, ge=0, description="... and by more than this share of the old length")
    width_growth_px: float = Field(2.0, ge=0, description="or wider (max width) by more than this many pixels")
    min_length_px: float = Field(25.0, ge=0, description="records shorter than this at both dates are specks, left out")


def _aashto() -> WidthRule:
    return WidthRule(
        classes=[LimitClass(name="CS1 insignificant (< 0.3 mm)", state=1, upper=0.3),
                 LimitClass(name="CS2 moderate (0.3-1.3 mm)", state=2, upper=1.3),
                 LimitClass(name="CS3 wide (> 1.3 mm)", state=3)],
        source="AASHTO Manual for Bridge Element Inspection, reinforced concrete cracking (defect 1130)",
    )


def _pavement() -> MaterialRules:
    return MaterialRules(
        width=WidthRule(
            classes=[LimitClass(name="low severity (< 10 mm)", state=1, upper=10.0),
                     LimitClass(name="medium severity (10-75 mm)", state=2, upper=75.0),
                     LimitClass(name="high severity (> 75 mm)", state=3)],
            source="ASTM D6433 (PCI) longitudinal/transverse cracking severity widths",
        ),
        density=DensityRule(
            classes=[LimitClass(name="low density (< 0.01 m/m2)", state=1, upper=0.01),
                     LimitClass(name="moderate density (0.01-0.1 m/m2)", state=2, upper=0.1),
                     LimitClass(name="high density (> 0.1 m/m2)", state=3)],
            source="decades of the crack-density axis of PCI deduct curves (ASTM D6433; 1 % = 0.01 m/m2)",
        ),
    )


class AssetRules(StrictModel):
    """Everything the asset figures, crack types, condition classes and change matching use."""

    default_material: str = "concrete"
    materials: dict[str, MaterialRules] = Field(
        default_factory=lambda: {"concrete": MaterialRules(width=_aashto()), "pavement": _pavement()})
    crack_types: CrackTypeRules = Field(default_factory=CrackTypeRules)
    change: ChangeRules = Field(default_factory=ChangeRules)

    @model_validator(mode="after")
    def _known_default(self) -> "AssetRules":
        if self.default_material not in self.materials:
            raise ValueError(f"default_material {self.default_material!r} is not one of materials {sorted(self.materials)}")
        return self


def load_rules(path: str | Path | None) -> AssetRules:
    """The rule file, validated (ConfigError naming it when it does not), or the defaults."""
    return load_config(AssetRules, path)


@dataclass(frozen=True)
class Verdict:
    """A class, or why none could be given."""

    name: str
    state: int | None  # None: unresolved

    @property
    def resolved(self) -> bool:
        return self.state is not None


def _index(classes: list[LimitClass], value: float) -> int:
    return next(i for i, c in enumerate(classes) if c.upper is None or value < c.upper)


def width_verdict(rule: WidthRule, width_m: float | None, gsd_m: float | None) -> Verdict:
    """Class of a width (metres) measured at ``gsd_m``, or 'unresolved' when the GSD is too coarse to tell."""
    if gsd_m is None:
        return Verdict(NO_SCALE, None)
    width_mm = 0.0 if width_m is None else width_m * 1000
    slack = rule.uncertainty_px * gsd_m * 1000
    low, high = max(width_mm - slack, 0.0), width_mm + slack
    if width_m is None:  # no crack: the best class
        low = high = 0.0
    gsd = format_gsd(gsd_m)
    finest = rule.classes[0].upper
    if width_m is None and finest is not None and gsd_m * 1000 > finest:
        # no crack found, but a crack narrower than a pixel and wider than the first limit could hide in one
        return Verdict(f"unresolved at {gsd} GSD: no crack found, but the {finest:g} mm limit is finer than a pixel", None)
    first, last = _index(rule.classes, low), _index(rule.classes, high)
    if first == last:
        return Verdict(rule.classes[first].name, rule.classes[first].state)
    limit = rule.classes[first].upper
    return Verdict(f"unresolved at {gsd} GSD: {low:.1f}-{high:.1f} mm spans the {limit:g} mm limit", None)


def density_verdict(rule: DensityRule, density_m: float | None) -> Verdict:
    """Class of a crack density in m/m² (None: no ground scale)."""
    if density_m is None:
        return Verdict(NO_SCALE, None)
    c = rule.classes[_index(rule.classes, density_m)]
    return Verdict(c.name, c.state)


def worst(verdicts: list[Verdict]) -> Verdict:
    """The condition: the worst resolved class, or 'unresolved' when none is."""
    resolved = [v for v in verdicts if v.resolved]
    if not resolved:
        return Verdict("unresolved", None)
    return max(resolved, key=lambda v: v.state or 0)
