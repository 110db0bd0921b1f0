"""Files and project-file entries of map tool results: kept copies under free names (with their sidecars, written
atomically) and temporary layers left out of a saved project."""
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
