"""Message-bar messages that stay short: one line in the bar, the full text behind a "Details" button.

A long message (an install command, a traceback-free explanation) is cut after two lines by the bar; the details
box shows it whole, one paragraph per sentence group, and selectable so a command can be copied.
"""
from __future__ import annotations

from qgis.core import Qgis
from qgis.gui import QgsMessageBar, QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import QMessageBox, QPushButton, QWidget

# Keep each open details box referenced (a parentless QMessageBox opened with open() would be collected).
_OPEN_BOXES: list[QMessageBox] = []


def details_box(title: str, text: str, parent: QWidget | None = None) -> QMessageBox:
    """A non-blocking message box showing `text` whole, its text selectable (to copy a command)."""
    box = QMessageBox(parent)
    box.setWindowTitle(title)
    box.setIcon(QMessageBox.Information)
    box.setText(text)
    box.setTextInteractionFlags(Qt.TextSelectableByMouse)
    box.setStandardButtons(QMessageBox.Close)
    box.finished.connect(lambda _result, box=box: _OPEN_BOXES.remove(box) if box in _OPEN_BOXES else None)
    _OPEN_BOXES.append(box)
    box.open()
    return box


def push_with_details(bar: QgsMessageBar, title: str, summary: str, details: str,
                      level: Qgis.MessageLevel = Qgis.Warning, duration: int = 0) -> QgsMessageBarItem:
    """Push `summary` (one short sentence) with a "Details" button that opens `details` in a message box."""
    item = QgsMessageBarItem(title, summary, level, duration)
    button = QPushButton("Details")
    button.setObjectName("gairDetailsButton")
    button.clicked.connect(lambda: details_box(title, details, bar.window()))
    item.layout().addWidget(button)
    bar.pushItem(item)
    return item
