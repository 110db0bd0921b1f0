"""Files and project-file entries of map tool results: kept copies under free names (with their sidecars, written
atomically) and temporary layers left out of a saved project.

Results are written to a temporary folder first. "Keep results" copies the current ones beside the project file (or
into a chosen folder) and repoints their layers; on shutdown every layer still reading the temporary folder leaves the
project before the folder is deleted, so a saved project never references files that are gone."""
from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path


def provider_options():
    from qgis.core import QgsDataProvider

    return QgsDataProvider.ProviderOptions()


def free_path(folder: str, stem: str, suffix: str) -> str:
    """folder/stem.suffix, or stem_2, stem_3... when taken: keeping never overwrites an earlier result."""
    candidate, n = os.path.join(folder, stem + suffix), 1
    while glob.glob(glob.escape(os.path.splitext(candidate)[0]) + ".*"):
        n += 1
        candidate = os.path.join(folder, f"{stem}_{n}{suffix}")
    return candidate


def copy_with_sidecars(path: str, target: str) -> None:
    """Copy an engine output with the files it consists of (engine io.files.output_files: .aux.xml, PCA sidecar,
    quicklook...) under the target's name; each copy goes to a temporary name first, so an interrupted copy
    leaves no half file under a final name."""
    from ..engine_link import engine_attrs

    output_files = engine_attrs("io.files", "output_files")
    source, stem = Path(path), Path(path).stem
    target_stem = Path(target).stem
    for part in output_files(source):
        name = part.name
        renamed = target_stem + name[len(stem):] if name.startswith(stem) else name
        final = os.path.join(os.path.dirname(target), renamed)
        shutil.copy2(part, final + ".part")
        os.replace(final + ".part", final)


def remove_layer_tree_entries(document, layer_ids: set[str]) -> None:
    """Drop the layer-tree nodes (and custom-order items) of `layer_ids` from a project document being written."""
    doomed = []
    for tag, layer_id in (("layer-tree-layer", lambda e: e.attribute("id")), ("item", lambda e: e.text())):
        nodes = document.elementsByTagName(tag)
        doomed += [nodes.at(i) for i in range(nodes.count()) if layer_id(nodes.at(i).toElement()) in layer_ids]
    for node in doomed:
        node.parentNode().removeChild(node)


def empty_element(element) -> None:
    """Empty a <maplayer> element being written: QGIS reads an empty one as nothing (no "unavailable layer")."""
    while element.hasChildNodes():
        element.removeChild(element.firstChild())
    attributes = element.attributes()
    for name in [attributes.item(i).nodeName() for i in range(attributes.count())]:
        element.removeAttribute(name)


class KeptResults:
    """The controller's "Keep results" and the project-file hygiene of its temporary layers (a mixin: it uses the
    controller's project, workdir, embedding/similarity/detail/points layers, result_paths and signals)."""

    def default_keep_folder(self) -> str | None:
        """The project file's folder; None while the project is unsaved (then the user picks one)."""
        return self.project.absolutePath() or None

    def keep_results(self, folder: str) -> list[str]:
        """Copy the current similarity GeoTIFF and top-places GeoPackage into `folder` under names of their own,
        and repoint their layers there; returns the new paths. The next click starts new temporary results."""
        if self.result_paths is None:
            self.status.emit("Nothing to keep yet: click the map first.")
            return []
        os.makedirs(folder, exist_ok=True)
        kept = []
        embedding = self.embedding_layer
        if embedding is not None and embedding in self.temporary_layers():  # embedded here: keep it too
            target = free_path(folder, "gair_embedding", ".tif")
            copy_with_sidecars(embedding.source().split("|")[0], target)  # with its .pca.npz and quicklook
            embedding.setDataSource(target, embedding.name(), "gdal", provider_options())
            kept.append(target)
        stem = Path(embedding.source().split("|")[0]).stem if embedding is not None else "gair"
        detail_path = self.detail_layer.source() if self.detail_layer is not None else None
        for layer, path, suffix in ((self.similarity_layer, self.result_paths[0], "similarity"),
                                    (self.detail_layer, detail_path, "similarity_detail"),
                                    (self.points_layer, self.result_paths[1], "top_places")):
            if path is None:
                continue
            target = free_path(folder, f"{stem}_{suffix}", Path(path).suffix)
            copy_with_sidecars(path, target)
            if layer is not None and self.project.mapLayer(layer.id()) is not None:
                source = target if layer is not self.points_layer else f"{target}|layername=similar_places"
                layer.setDataSource(source, Path(target).stem, layer.providerType(), provider_options())
            kept.append(target)
        self.similarity_layer = self.points_layer = self.detail_layer = self.result_paths = None
        self.detail_extent = None
        self.results_changed.emit(False)
        self.status.emit(f"Kept {len(kept)} file(s) in {folder}; the project now reads them from there.")
        return kept

    def temporary_layers(self) -> list:
        """Project layers reading files in this session's temporary folder."""
        root = os.path.realpath(self.workdir) + os.sep
        return [layer for layer in self.project.mapLayers().values()
                if os.path.realpath(layer.source().split("|")[0]).startswith(root)]

    def _leave_out_temporary_layers(self, document) -> None:
        """Writing the project file: layers of the temporary folder are left out of it, because their files go
        when the session ends. They stay on the map until then."""
        ids = {layer.id() for layer in self.temporary_layers()}
        if ids:
            remove_layer_tree_entries(document, ids)
            self.status.emit(f"The project was saved without {len(ids)} temporary GAIR layer(s): click Keep results "
                             "to store them beside the project, then save again.")

    def _leave_out_layer_element(self, layer, element, document) -> None:
        if layer in self.temporary_layers():
            empty_element(element)

