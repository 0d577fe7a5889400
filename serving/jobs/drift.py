"""`vae drift --model BUNDLE FILE`: a file's rows against the bundle's drift reference, offline.

The rows are read as `vae score` reads them (any size, in chunks), scored at the calibration's
n_samples with the contract's noise (seed 0), and counted into the buckets of every view of
serving.core.drift: the same counts the service exports to Prometheus, and the same PSI the
recording rule takes. It writes a JSON report and an SVG plot (no plotting library needed), and
says whether any view's worst PSI is above the threshold; the CLI then exits 3.
"""

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from serving.core.drift import Drift, psi
from serving.core.rows import InputError
from serving.store import load_runtime
from serving.tables.files import atomic_write
from serving.tables.sources import chunks, open_source

DEFAULT_THRESHOLD = 0.25  # the alerting rules' threshold: a major shift
CHUNK_ROWS = 1 << 15
NOISE_SEED = 0


@dataclass
class DriftReport:
    rows: int
    threshold: float
    psi: dict[str, dict[str, float]]  # view -> column -> PSI
    shares: dict[str, dict[str, dict[str, list[float]]]]  # view -> column -> observed/reference

    def worst(self, view: str) -> tuple[str, float] | None:
        columns = self.psi.get(view)
        if not columns:
            return None
        name = max(columns, key=columns.get)
        return name, columns[name]

    @property
    def drifted(self) -> list[str]:
        return [name if view == "score" else f"{view} {name}" for view in self.psi
                for name, value in self.psi[view].items() if value > self.threshold]

    def lines(self) -> list[str]:
        out = [f"{self.rows} rows against the reference's deciles (PSI; above "
               f"{self.threshold:g} is drift)"]
        for view in ("score", "feature", "latent"):
            if (worst := self.worst(view)) is not None:
                count = len(self.psi[view])
                what = "score" if view == "score" else f"worst of {count} {view}s: {worst[0]}"
                out.append(f"  {what} {worst[1]:.3f}")
        drifted = self.drifted
        out.append(f"drift: {len(drifted)} above {self.threshold:g}"
                   + (f" ({', '.join(drifted[:5])}{', ...' if len(drifted) > 5 else ''})"
                      if drifted else ""))
        return out


def drift_of_file(model: str, path: str | Path, threshold: float = DEFAULT_THRESHOLD,
                  threads: int | None = None) -> DriftReport:
    if not threshold > 0:
        raise InputError(f"--threshold {threshold}: expected a PSI above 0, such as 0.25")
    runtime = load_runtime(model, threads)
    manifest = runtime.manifest
    if manifest.drift is None:
        raise InputError(f"{model} was exported before drift references; export its run again "
                         f"to compare a file with it")
    drift = Drift(manifest.drift.model_dump(), manifest.calibration.n_samples)
    source = open_source(path, manifest.feature_names, [], runtime.schema)
    k = manifest.calibration.n_samples
    flat, rows = np.zeros(len(drift.slots), np.int64), 0
    for first, x, _ in chunks(source, CHUNK_ROWS):  # every view counts: mu, and K = k
        scored = runtime.score(x, runtime.noise(NOISE_SEED, k, first), with_latent=True)
        flat += drift.flat_counts(x, scored.mu, scored.percentile, k)
        rows += len(x)
    if rows == 0:
        raise InputError(f"{path} has no rows; expected rows to compare with the reference")
    totals = drift.split(flat)
    report = DriftReport(rows, threshold, {}, {})
    for view in drift.views:
        counts = totals[view.name]
        report.psi[view.name] = {c: psi(n, s) for c, n, s in zip(view.columns, counts,
                                                                 view.shares)}
        report.shares[view.name] = {c: {"observed": (n / rows).tolist(), "reference": s}
                                    for c, n, s in zip(view.columns, counts, view.shares)}
    return report


def write_report(report: DriftReport, out: Path) -> None:
    """drift.json and drift.svg into the directory out."""
    out.mkdir(parents=True, exist_ok=True)
    body = {"rows": report.rows, "threshold": report.threshold, "drifted": report.drifted,
            "psi": report.psi, "shares": report.shares}
    atomic_write(out / "drift.json", lambda tmp: tmp.write_text(json.dumps(body, indent=1)))
    atomic_write(out / "drift.svg", lambda tmp: tmp.write_text(svg(report)))


def svg(report: DriftReport) -> str:
    """Two panels: the score deciles' shares against 10% each, and the features' and latent
    dimensions' PSIs, worst first (at most 20), with the threshold as a line."""
    width, height, pad = 720, 560, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    score = report.shares.get("score", {}).get("score")
    parts.append(f'<text x="{pad}" y="20" font-size="13">score deciles: share of rows '
                 f'(reference 10% each)</text>')
    if score:
        top = max(max(score["observed"]), 0.2)
        for b, share in enumerate(score["observed"]):
            h = 180 * share / top
            x = pad + b * 62
            parts.append(f'<rect x="{x}" y="{210 - h:.1f}" width="50" height="{h:.1f}" '
                         f'fill="#4477aa"/><text x="{x + 25}" y="225" text-anchor="middle">'
                         f'{b}</text><text x="{x + 25}" y="{205 - h:.1f}" '
                         f'text-anchor="middle">{share:.0%}</text>')
        y = 210 - 180 * 0.1 / top
        parts.append(f'<line x1="{pad}" x2="{pad + 620}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#cc3311" stroke-dasharray="4"/>')
    ranked = sorted(((v, f"{view} {name}") for view in ("feature", "latent")
                     for name, v in report.psi.get(view, {}).items()), reverse=True)[:20]
    parts.append(f'<text x="{pad}" y="260" font-size="13">PSI, worst first (line: '
                 f'{report.threshold:g})</text>')
    top = max([v for v, _ in ranked] + [report.threshold * 1.2])
    for i, (value, name) in enumerate(ranked):
        y, w = 270 + i * 14, 420 * value / top
        colour = "#cc3311" if value > report.threshold else "#4477aa"
        parts.append(f'<text x="{pad + 190}" y="{y + 10}" text-anchor="end">'
                     f'{escape(name[:32])}</text><rect x="{pad + 200}" y="{y}" width="{w:.1f}" '
                     f'height="11" fill="{colour}"/><text x="{pad + 205 + w:.1f}" '
                     f'y="{y + 10}">{value:.3f}</text>')
    x = pad + 200 + 420 * report.threshold / top
    parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="268" y2="{270 + 14 * max(len(ranked), 1)}" '
                 f'stroke="#cc3311" stroke-dasharray="4"/></svg>')
    return "\n".join(parts)
