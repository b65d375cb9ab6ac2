"""The plugin object QGIS loads: registers the Processing provider and, in the desktop, a Settings menu entry."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .provider import SurveyCracksProvider

MENU = "&Survey cracks"


class SurveyCracksPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface  # None under qgis_process
        self.provider: SurveyCracksProvider | None = None
        self.action: QAction | None = None

    def initProcessing(self) -> None:
        self.provider = SurveyCracksProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        if self.iface is None:
            return
        self.action = QAction(QIcon(str(Path(__file__).with_name("icon.png"))), "Settings…", self.iface.mainWindow())
        self.action.triggered.connect(self.show_settings)
        self.iface.addPluginToMenu(MENU, self.action)

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec_()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.action is not None and self.iface is not None:
            self.iface.removePluginMenu(MENU, self.action)
