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


def format_text(report: dict) -> str:
    summary, per_class, confusion = _rows(report)
    width = max(len(k) for k, _ in summary)
    parts = ["\n".join(f"{k.ljust(width)}  {v}" for k, v in summary)]
    parts += [_text_table(t) for t in (per_class, confusion) if t]
    return "\n\n".join(parts) + "\n"


def format_html(report: dict) -> str:
    summary, per_class, confusion = _rows(report)

    def table(rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [table([["", ""], *[[k, v] for k, v in summary]])] + [table(t) for t in (per_class, confusion) if t]
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
