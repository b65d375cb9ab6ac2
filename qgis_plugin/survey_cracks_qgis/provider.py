"""The Processing provider "Survey cracks" (id survey_cracks) and where it finds the product."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider, QgsSettings
from qgis.PyQt.QtGui import QIcon

from .algorithms import CompareAlgorithm, DetectCracksAlgorithm, EvaluateAlgorithm
from .runner import SETTINGS_KEY, Runtime, find_runtime


def configured_runtime() -> Runtime:
    """The product as the plugin's settings (else PATH) say."""
    return find_runtime(str(QgsSettings().value(SETTINGS_KEY, "") or ""))


class SurveyCracksProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "survey_cracks"

    def name(self) -> str:
        return "Survey cracks"

    def longName(self) -> str:
        return "Survey cracks: crack detection in survey imagery"

    def icon(self) -> QIcon:
        return QIcon(str(Path(__file__).with_name("icon.png")))

    def loadAlgorithms(self) -> None:
        for algorithm in (DetectCracksAlgorithm(), EvaluateAlgorithm(), CompareAlgorithm()):
            self.addAlgorithm(algorithm)
