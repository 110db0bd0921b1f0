"""The cross-validation report laid out for the algorithm dialog's log, so its tables line up there.

QGIS 3.22 gives an algorithm no way to log in a fixed-width font: pushInfo is HTML-escaped and drawn in the UI's
proportional font with runs of spaces collapsed, and pushCommandInfo's <code> does not change the font in Qt 5.
So every table cell is made of digits padded with leading zeros (the UI fonts' digits are tabular) and columns
are separated by NO-BREAK SPACEs (which HTML does not collapse); words (class names) come last on each row,
columns are numbered rather than titled. The same text lines up in a terminal (qgis_process).
"""
from __future__ import annotations

FIGURE_SPACE = "\u2007"
GAP = "\u00a0" * 3


def _right(cells: list[str]) -> list[str]:
    """Cells padded to one width: numbers with leading zeros (a digit's width in any font with tabular digits; Qt
    trims a line's leading FIGURE SPACE, and some fonts draw it narrower than a digit), empty cells with spaces."""
    width = max(len(cell) for cell in cells)
    return [("0" if cell else FIGURE_SPACE) * (width - len(cell)) + cell for cell in cells]


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows of numeric cells -> lines whose columns are right-aligned (cells per column padded to one width)."""
    columns = [_right([row[i] for row in rows]) for i in range(len(rows[0]))]
    return [GAP.join(column[r] for column in columns) for r in range(len(rows))]


def report_for_log(report: dict) -> str:
    """Summary sentence(s), then for a classifier the per-class table and the confusion matrix."""
    grouped = ", grouped by feature" if report.get("grouped_by_feature") else ""
    lines = [(f"Cross-validation of the {report['method']} {report['task']}: {report['folds']} folds{grouped}, "
              f"{report['samples']} samples.")]
    if report["task"] == "regression":
        lines.append(f"R² {report['r2']:.4f}, RMSE {report['rmse']:.4f}, MAE {report['mae']:.4f} (target mean "
                     f"{report['target_mean']:.4f}, standard deviation {report['target_std']:.4f}).")
        return "\n".join(lines + _validation(report))
    lines.append(f"Overall accuracy {report['overall_accuracy']:.4f}, macro F1 {report['macro_f1']:.4f}, chance "
                 f"(majority class) {report['chance_accuracy']:.4f}.")
    classes = list(report["classes"])
    numbers = [str(i) for i in range(1, len(classes) + 1)]
    lines += ["", "Per class: precision, recall, F1, support, class."]
    metrics = [report["per_class"][name] for name in classes]
    table = _columns([[f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"]), n]
                      for m, n in zip(metrics, numbers)])
    lines += [f"{line}{GAP}{name}" for line, name in zip(table, classes)]
    lines += ["", "Confusion matrix: rows are the true classes, columns the predicted ones (numbered as the rows)."]
    matrix = _columns([[*numbers, ""]] + [[*map(str, row), n] for row, n in zip(report["confusion_matrix"], numbers)])
    lines.append(matrix[0].rstrip(FIGURE_SPACE + "\u00a0"))
    lines += [f"{line}{GAP}{name}" for line, name in zip(matrix[1:], classes)]
    return "\n".join(lines + _validation(report))


def _validation(report: dict) -> list[str]:
    """Spatial block cross-validation beside the random one, the learning curve, and which estimate to trust."""
    section = report.get("validation")
    if not section:
        return []
    metric, spatial = section["metric"], section["spatial"]
    lines = ["", f"Random k-fold {metric}: {section['random'][metric]:.4f}; spatial blocks: "
             + (spatial["unavailable"] if "unavailable" in spatial else
                f"{spatial[metric]:.4f} ({spatial['blocks']} blocks of {spatial['block_m'] / 1000:.2f} km, "
                f"{spatial['block_source']})."), section["why"]]
    curve = (section.get("learning_curve") or {}).get("points")
    if curve:
        lines.append(f"Learning curve ({section['learning_curve']['split']} folds), {metric} at "
                     + ", ".join(f"{p['fraction']:.0%}: {p[metric]:.3f}" for p in curve) + " of the labels.")
    return lines
