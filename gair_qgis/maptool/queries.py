"""Searches by another modality from the map tool: a street-view photo, or a location clicked on the map (the
engine's search_by_photo and search_by_location; GAIR aligns both with the imagery's embeddings)."""
from __future__ import annotations

import os
import uuid

from qgis.core import QgsPointXY

from . import jobs
from .jobs import EngineTask


class ModalSearches:
    """The controller's searches by photo and by location (a mixin: it uses the controller's embedding layer,
    examples, workdir, top_k, tasks and signals). Their result replaces the map's like a click's."""

    def search_by_photo(self, photo: str) -> None:
        """Where the raster looks like a street-view photo (GAIR's aligned photo embedding, engine search_by_photo)."""
        self._start_query("search_by_photo", {"photos": [photo]}, "GAIR search by photo",
                          f"the photo {os.path.basename(photo)}")

    def search_by_location(self, point: QgsPointXY) -> None:
        """Where the raster looks like what GAIR learned for the location `point` (raster CRS)."""
        self.location_mode = False
        self._start_query("search_by_location", {"locations": [[point.x(), point.y()]],
                                                 "locations_crs": self.embedding_layer.crs().toWkt()},
                          "GAIR search by location", f"GAIR's location embedding of {point.x():.5f}, {point.y():.5f}")

    def _start_query(self, op: str, query: dict, title: str, describe: str) -> None:
        """A search by another modality: the examples go, the result replaces the map's."""
        if self.embedding_layer is None:
            self.status.emit("Pick an embedding raster first (the list shows embedding rasters only).")
            return
        try:  # on the GUI thread, before the task (see embed_visible_extent)
            jobs.ask_model_consent(None)
        except Exception as exc:
            self.status.emit(f"GAIR: {exc}")
            return
        self._cancel_task()
        self.examples.clear()
        self.examples_changed.emit(0)
        self.last_query = (op, dict(query))
        path = self.embedding_layer.source().split("|")[0]
        stem = os.path.join(self.workdir, f"{op}_{uuid.uuid4().hex[:8]}")
        top_k = self.top_k

        def work(progress, cancel, log):
            return jobs.run_query_search(op, path, query, stem + ".tif", stem + ".gpkg", top_k, progress, cancel, log)

        self._start(EngineTask(title, work, lambda task: self._search_done(task, "full", describe)))
