"""The evaluation report: a JSON file and one self-contained HTML page with inline SVG learning curves.

No plotting dependency: the charts are written as SVG by hand (accuracy against label fraction on a log axis, one
line per method with a +-1 std band), so the page opens anywhere without network access.
"""
from __future__ import annotations

import html
import json
import math
import os
from pathlib import Path

from ..io.files import atomic_path

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT, PAD_L, PAD_R, PAD_T, PAD_B = 460, 300, 52, 130, 30, 42


def write_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """report.json and report.html in out_dir (each written atomically); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    with atomic_path(json_path) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2), encoding="utf-8")
    with atomic_path(html_path) as tmp:
        Path(tmp).write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


def _x(fraction: float, fractions: list[float]) -> float:
    lo, hi = math.log10(min(fractions)), math.log10(max(fractions))
    span = (hi - lo) or 1.0
    return PAD_L + (math.log10(fraction) - lo) / span * (WIDTH - PAD_L - PAD_R)


def _y(value: float, lo: float, hi: float) -> float:
    return PAD_T + (hi - value) / ((hi - lo) or 1.0) * (HEIGHT - PAD_T - PAD_B)


def learning_curve_svg(title: str, curves: dict[str, list[dict]], chance: float | None = None) -> str:
    """One chart: accuracy vs fraction of training labels, a line (and std band) per method."""
    fractions = sorted({p["fraction"] for pts in curves.values() for p in pts})
    values = [p["accuracy"] + s * p["accuracy_std"] for pts in curves.values() for p in pts for s in (-1, 1)]
    lo = max(0.0, math.floor(min(values + ([chance] if chance else [])) * 10) / 10)
    hi = min(1.0, math.ceil(max(values) * 10) / 10) if values else 1.0
    hi = max(hi, lo + 0.1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">',
             f'<text x="{(PAD_L + WIDTH - PAD_R) / 2}" y="16" text-anchor="middle" font-size="13">'
             f'{html.escape(title)}</text>']
    for k in range(int(round((hi - lo) * 10)) + 1):
        v = lo + k / 10
        y = _y(v, lo, hi)
        parts.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.1f}</text>')
    for f in fractions:
        x = _x(f, fractions)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{HEIGHT - PAD_B}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{HEIGHT - PAD_B + 15}" text-anchor="middle">{f * 100:g} %</text>')
    parts.append(f'<text x="{(PAD_L + WIDTH - PAD_R) / 2}" y="{HEIGHT - 6}" text-anchor="middle">'
                 'training labels used</text>'
                 f'<text transform="translate(13 {(PAD_T + HEIGHT - PAD_B) / 2}) rotate(-90)" text-anchor="middle">'
                 'accuracy</text>')
    if chance is not None and lo <= chance <= hi:
        y = _y(chance, lo, hi)
        parts.append(f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888" '
                     f'stroke-dasharray="4 3"/><text x="{WIDTH - PAD_R - 4}" y="{y - 4:.1f}" text-anchor="end" '
                     'fill="#888">majority class</text>')
    for i, (method, pts) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = sorted(pts, key=lambda p: p["fraction"])
        xy = [(_x(p["fraction"], fractions), p) for p in pts]
        upper = " ".join(f"{x:.1f},{_y(min(hi, p['accuracy'] + p['accuracy_std']), lo, hi):.1f}" for x, p in xy)
        lower = " ".join(f"{x:.1f},{_y(max(lo, p['accuracy'] - p['accuracy_std']), lo, hi):.1f}"
                         for x, p in reversed(xy))
        line = " ".join(f"{x:.1f},{_y(p['accuracy'], lo, hi):.1f}" for x, p in xy)
        parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.15" stroke="none"/>'
                     f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{_y(p["accuracy"], lo, hi):.1f}" r="3" fill="{colour}"/>' for x, p in xy]
        ly = PAD_T + 8 + 16 * i
        parts.append(f'<rect x="{WIDTH - PAD_R + 10}" y="{ly - 8}" width="12" height="3" fill="{colour}"/>'
                     f'<text x="{WIDTH - PAD_R + 27}" y="{ly - 3}">{html.escape(method)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(curves: dict[str, list[dict]]) -> str:
    fractions = sorted({p["fraction"] for pts in curves.values() for p in pts})
    head = "".join(f"<th>{f * 100:g} %</th>" for f in fractions)
    rows = []
    for method, pts in curves.items():
        by_fraction = {p["fraction"]: p for p in pts}
        cells = "".join(f"<td>{by_fraction[f]['accuracy']:.3f} &plusmn; {by_fraction[f]['accuracy_std']:.3f}</td>"
                        if f in by_fraction else "<td></td>" for f in fractions)
        rows.append(f"<tr><th>{html.escape(method)}</th>{cells}</tr>")
    return f"<table><tr><th>method</th>{head}</tr>{''.join(rows)}</table>"


def _settings(report: dict) -> str:
    keep = {k: v for k, v in report.items() if k not in ("results", "gain", "paths")}
    items = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
                    for k, v in keep.items())
    return f"<table class='settings'>{items}</table>"


def _gain(report: dict) -> str:
    gains = report.get("gain")
    if not gains:
        return ""
    parts = ["<h2>Gain of the pretrained encoder over random initialisation (accuracy points)</h2>"]
    for split, by_classifier in gains.items():
        for classifier, pts in by_classifier.items():
            cells = "".join(f"<td>{p['fraction'] * 100:g} %: {p['gain']:+.3f}</td>" for p in pts)
            label = f"{html.escape(split)} split, {html.escape(classifier)}"
            parts.append(f"<table><tr><th>{label}</th>{cells}</tr></table>")
    return "".join(parts)


def render_html(report: dict) -> str:
    """The whole page as a string."""
    chance = report.get("chance")
    sections = []
    for split, result in report.get("results", {}).items():
        methods = result["methods"]
        classifiers = list(next(iter(methods.values()), {}))
        sections.append(f"<h2>Split: {html.escape(split)} ({result['folds']} folds)</h2>")
        for classifier in classifiers:
            curves = {m: by_clf[classifier] for m, by_clf in methods.items()}
            label = report.get("classifiers", {}).get(classifier, classifier)
            sections.append(f"<h3>{html.escape(str(label))}</h3><div class='chart'>"
                            f"{learning_curve_svg(f'{split} split, {classifier}', curves, chance)}</div>"
                            f"{_table(curves)}")
    title = f"GAIR evaluation: {report.get('task', '')}"
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;font-size:13px}.settings td{font-family:monospace;word-break:break-all}")
    methods = ", ".join(html.escape(m) for m in report.get("method_names", []))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>Methods compared: {methods}. {html.escape(report.get('description', ''))}</p>"
            f"{_gain(report)}{''.join(sections)}<h2>Settings</h2>{_settings(report)}</body></html>")
