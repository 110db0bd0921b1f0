"""Plugin object QGIS creates: registers the Processing provider, the map tool, its dock, the settings and "Set up
engine…", and says at start when no engine is set up (QGIS's own Python needs nothing: the engine runs elsewhere)."""
from __future__ import annotations

from qgis.core import Qgis, QgsApplication, QgsMapLayerType, QgsMessageLog, QgsRasterLayer
from qgis.gui import QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QPushButton

from . import resources_path
from .toolbox.provider import GAIRProvider

MENU = "&GAIR"
NOT_SET_UP = "GAIR engine not set up: Plugins > GAIR > Set up engine…"


class GAIRPlugin:
    """Thin shell: all work is in the provider's algorithms and the map tool."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider: GAIRProvider | None = None
        self.actions: list[QAction] = []
        self.dock = None

    def initProcessing(self) -> None:  # noqa: N802  (qgis_process calls this for hasProcessingProvider=yes)
        if self.provider is None:
            provider = GAIRProvider()
            if QgsApplication.processingRegistry().addProvider(provider):
                self.provider = provider
            else:  # the registry refused (and deleted) it: another copy of GAIR is already loaded
                QgsMessageLog.logMessage("A 'gair' Processing provider is already registered; keeping it.", "GAIR",
                                         Qgis.Warning)

    def initGui(self) -> None:  # noqa: N802
        self.initProcessing()
        icon = QIcon(resources_path("icon.png"))
        similarity = QAction(icon, "GAIR similarity map tool", self.iface.mainWindow())
        similarity.setCheckable(True)
        similarity.setToolTip("Click the map to find similar places (GAIR embeddings)")
        similarity.toggled.connect(self._toggle_dock)
        settings = QAction(icon, "GAIR settings…", self.iface.mainWindow())
        settings.triggered.connect(self.show_settings)
        setup = QAction(icon, "Set up engine…", self.iface.mainWindow())
        setup.setToolTip("Create or repair the Python environment the GAIR engine runs in (with PyTorch)")
        setup.triggered.connect(self.show_setup)
        true_colour = QAction("Style as Sentinel-2 true colour", self.iface.mainWindow())
        true_colour.setToolTip("Show the active Sentinel-2 raster as red/green/blue = B4/B3/B2, stretched 2-98 %")
        true_colour.triggered.connect(self.style_active_as_true_colour)
        self.iface.addToolBarIcon(similarity)
        for action in (similarity, settings, setup, true_colour):
            self.iface.addPluginToMenu(MENU, action)
        # also in the layer tree's context menu of every raster layer
        self.iface.addCustomActionForLayerType(true_colour, "", QgsMapLayerType.RasterLayer, True)
        self.actions = [similarity, settings, setup, true_colour]
        self.say_when_not_set_up()

    def say_when_not_set_up(self) -> bool:
        """A message-bar note with a "Set up engine…" button when no engine is found (and none is remote)."""
        from .engine_jobs import engine_python, remote_engine_settings

        if engine_python()[0] is not None or remote_engine_settings() is not None:
            return False
        item = QgsMessageBarItem("GAIR", NOT_SET_UP, Qgis.Warning, 0)
        button = QPushButton("Set up engine…")
        button.setObjectName("gairSetupButton")
        button.clicked.connect(self.show_setup)
        item.layout().addWidget(button)
        self.iface.messageBar().pushItem(item)
        return True

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
            self.iface.removeCustomActionForLayerType(action)
        self.actions = []
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        from .engine_jobs import stop_engine

        stop_engine()

    def _toggle_dock(self, checked: bool) -> None:
        if self.dock is None:
            from .maptool.dock import SimilarityDock

            self.dock = SimilarityDock(self.iface)
            self.dock.closed.connect(lambda: self.actions[0].setChecked(False))
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.setVisible(checked)
        self.dock.set_tool_active(checked)

    def style_active_as_true_colour(self) -> bool:
        """Give the active raster the Sentinel-2 true-colour style (B4/B3/B2); say so when it is not Sentinel-2."""
        from .styling import true_color_renderer

        layer = self.iface.activeLayer()
        if isinstance(layer, QgsRasterLayer) and true_color_renderer(layer):
            layer.triggerRepaint()
            self.iface.layerTreeView().refreshLayerSymbology(layer.id())
            return True
        name = f"'{layer.name()}'" if layer is not None else "The active layer"
        self.iface.messageBar().pushMessage(
            "GAIR", f"{name} is not a Sentinel-2 raster (no B4, B3 and B2 bands); select a Sentinel-2 raster "
            "in the Layers panel first.", level=Qgis.Warning, duration=8)
        return False

    def show_setup(self) -> None:
        from .engine_setup_dialog import EngineSetupDialog

        EngineSetupDialog(self.iface.mainWindow()).exec_()

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        SettingsDialog(self.iface.mainWindow()).exec_()
