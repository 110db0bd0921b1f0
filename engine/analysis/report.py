"""Cross-validation reports: metrics as a JSON-able dict plus a readable text or HTML table."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from ..io.files import atomic_path


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], method: str,
                          folds: int, grouped: bool) -> dict:
    """Overall accuracy, macro F1, per-class precision/recall/F1/support, confusion matrix (rows = truth)."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    labels = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "task": "classification", "method": method, "folds": folds, "grouped_by_feature": grouped,
        "samples": len(y_true), "classes": classes,
        "overall_accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "chance_accuracy": float(np.max(np.bincount(y_true, minlength=len(classes))) / len(y_true)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, precision, recall, f1, support)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The headline scores of one cross-validation split of a classifier."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0))}


def regression_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """The headline scores of one cross-validation split of a regressor."""
    from sklearn.metrics import mean_squared_error, r2_score

    return {"r2": float(r2_score(y_true, y_pred)), "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred)))}


def regression_report(y_true: np.ndarray, y_pred: np.ndarray, method: str, folds: int, grouped: bool) -> dict:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {"task": "regression", "method": method, "folds": folds, "grouped_by_feature": grouped,
            "samples": len(y_true), "r2": float(r2_score(y_true, y_pred)),
            "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
            "mae": float(mean_absolute_error(y_true, y_pred)),
            "target_mean": float(np.mean(y_true)), "target_std": float(np.std(y_true))}


def _rows(report: dict) -> tuple[list[tuple[str, str]], list[list[str]] | None, list[list[str]] | None]:
    """Summary pairs, per-class table, confusion table (cells as strings) shared by the text and HTML forms."""
    summary = [("task", report["task"]), ("method", report["method"]), ("samples", str(report["samples"])),
               ("folds", f"{report['folds']}{' (grouped by feature)' if report['grouped_by_feature'] else ''}")]
    if report["task"] == "regression":
        summary += [(k.upper() if k != "r2" else "R^2", f"{report[k]:.4f}") for k in ("r2", "rmse", "mae")]
        return summary, None, None
    summary += [("overall accuracy", f"{report['overall_accuracy']:.4f}"), ("macro F1", f"{report['macro_f1']:.4f}"),
                ("chance (majority class)", f"{report['chance_accuracy']:.4f}")]
    per_class = [["class", "precision", "recall", "F1", "support"]] + [
        [c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])]
        for c, m in report["per_class"].items()]
    confusion = [["truth \\ predicted", *report["classes"]]] + [
        [c, *map(str, row)] for c, row in zip(report["classes"], report["confusion_matrix"])]
    return summary, per_class, confusion


def _text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _validation_rows(report: dict) -> tuple[list[list[str]], list[list[str]] | None, str, str] | None:
    """Estimates table (random vs spatial), learning-curve table, its title, and which estimate to trust and why."""
    section = report.get("validation")
    if not section:
        return None
    names = ["accuracy", "macro_f1"] if section["metric"] == "accuracy" else ["r2", "rmse"]
    titles = {"accuracy": "accuracy", "macro_f1": "macro F1", "r2": "R^2", "rmse": "RMSE"}
    estimates = [["split", "folds", *[titles[n] for n in names], "held out"]]
    estimates.append(["random k-fold", str(section["random"]["folds"]),
                      *[f"{section['random'][n]:.4f}" for n in names], "features at random"])
    spatial = section["spatial"]
    if "unavailable" in spatial:
        estimates.append(["spatial blocks", "-", *["-" for _ in names], spatial["unavailable"]])
    else:
        held_out = f"{spatial['blocks']} blocks of {spatial['block_m'] / 1000:.2f} km ({spatial['block_source']})"
        estimates.append(["spatial blocks", str(spatial["folds"]), *[f"{spatial[n]:.4f}" for n in names], held_out])
    curve, title = None, ""
    learning = section.get("learning_curve")
    if learning and "points" in learning:
        title = f"learning curve ({learning['split']} folds; training labels kept per fold)"
        curve = [["labels", "features", *[titles[n] for n in names]]] + [
            [f"{p['fraction']:.0%}", str(p["features"]), *[f"{p[n]:.4f}" for n in names]] for p in learning["points"]]
    return estimates, curve, title, f"Which estimate to trust: {section['trust']}. {section['why']}"


def format_text(report: dict) -> str:
    summary, per_class, confusion = _rows(report)
    width = max(len(k) for k, _ in summary)
    parts = ["\n".join(f"{k.ljust(width)}  {v}" for k, v in summary)]
    parts += [_text_table(t) for t in (per_class, confusion) if t]
    validation = _validation_rows(report)
    if validation is not None:
        estimates, curve, title, why = validation
        parts += [_text_table(estimates), why] + ([f"{title}\n{_text_table(curve)}"] if curve else [])
    return "\n\n".join(parts) + "\n"


def _curve_svg(report: dict) -> str:
    """The learning curve as a small inline SVG line chart (score against the share of labels)."""
    learning = (report.get("validation") or {}).get("learning_curve") or {}
    points = learning.get("points")
    if not points:
        return ""
    metric = report["validation"]["metric"]
    scores = [p[metric] for p in points]
    low, high = min(0.0, *scores), max(1.0, *scores)
    width, height, pad = 360, 200, 36

    def xy(p: dict) -> tuple[float, float]:
        return (pad + p["fraction"] * (width - 2 * pad),
                height - pad - (p[metric] - low) / (high - low or 1) * (height - 2 * pad))

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, points))
    dots = "".join(f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3'/>" for x, y in map(xy, points))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
            f"aria-label='learning curve'><rect width='100%' height='100%' fill='white'/>"
            f"<line x1='{pad}' y1='{height - pad}' x2='{width - pad}' y2='{height - pad}' stroke='#888'/>"
            f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{height - pad}' stroke='#888'/>"
            f"<polyline points='{line}' fill='none' stroke='#377eb8' stroke-width='2'/><g fill='#377eb8'>{dots}</g>"
            f"<text x='{width / 2}' y='{height - 6}' text-anchor='middle' font-size='12'>share of the labels</text>"
            f"<text x='4' y='{pad - 10}' font-size='12'>{html.escape(metric)} ({low:g}..{high:g})</text></svg>")


def format_html(report: dict) -> str:
    summary, per_class, confusion = _rows(report)

    def table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [table([["", ""], *[[k, v] for k, v in summary]])] + [table(t) for t in (per_class, confusion) if t]
    validation = _validation_rows(report)
    if validation is not None:
        estimates, curve, title, why = validation
        parts += ["<h2>Estimates: random and spatial cross-validation</h2>", table(estimates),
                  f"<p>{html.escape(why)}</p>"]
        if curve:
            parts += [f"<h2>{html.escape(title.capitalize())}</h2>", table(curve), _curve_svg(report)]
    style = ("body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}td:first-child{text-align:left}")
    title = f"GAIR {report['task']} report ({html.escape(report['method'])})"
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body><h1>{title}</h1>{''.join(parts)}</body></html>\n")


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Write JSON (.json), HTML (.html/.htm) or text (anything else), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    text = json.dumps(report, indent=2) + "\n" if suffix == ".json" else \
        format_html(report) if suffix in (".html", ".htm") else format_text(report)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
