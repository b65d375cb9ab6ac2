"""Plugins > Survey cracks > Settings: where survey-cracks is installed, and which runtime the plugin uses."""

from __future__ import annotations

from qgis.core import QgsSettings
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from .runner import SETTINGS_KEY, find_runtime


class SettingsDialog(QDialog):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Survey cracks settings")
        self.setMinimumWidth(560)
        self.path = QLineEdit(str(QgsSettings().value(SETTINGS_KEY, "") or ""))
        self.path.setPlaceholderText("empty: survey-cracks from PATH")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        row = QHBoxLayout()
        row.addWidget(self.path)
        row.addWidget(browse)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setMinimumHeight(self.status.fontMetrics().lineSpacing() * 5)  # the longest message, wrapped
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)  # the fix can be copied
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        intro = QLabel("The survey_cracks virtualenv folder (or its survey-cracks executable). QGIS's own "
                       "Python has no torch, so the plugin runs the product there, as a separate process.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.path.textChanged.connect(self.show_runtime)
        self.show_runtime()

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "survey_cracks virtualenv", self.path.text())
        if folder:
            self.path.setText(folder)

    def show_runtime(self) -> None:
        self.status.setText(find_runtime(self.path.text()).describe())

    def save(self) -> None:
        QgsSettings().setValue(SETTINGS_KEY, self.path.text().strip())
        self.accept()
