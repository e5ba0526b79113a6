"""The fleet signoff on disk: ``{run_id}.json`` / ``.md`` beside the run folder, and a figure of
every host's leak curve (one overlay, outliers and failing hosts in colour, the rest grey)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from soaklib.fleet.verdict import FleetVerdict, fleet_verdict
from soaklib.store import atomic_write_json, atomic_write_text, signoff_paths

FIGURE = "fleet_leak_curves"
MAX_LABELLED = 8  # hosts named in the legend; the rest are grey lines


def leak_curves_figure(fv: FleetVerdict) -> Any:
    """Memory (MiB) of every host over time on the fleet's bins: outlier and failing hosts in
    colour with their names; of a large fleet the others are thin grey lines (a fleet of up to
    ``MAX_LABELLED`` hosts has every host named). None when there are no bins."""
    if fv.bins.empty or "memory_mb" not in fv.bins.columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    from soaklib.report.plots import time_unit

    marked = list(dict.fromkeys(fv.outlier_hosts + [h.host for h in fv.hosts if h.verdict != "PASS"]))
    names = {str(h) for h in fv.bins["host"].unique()}
    named = set(names) if len(names) <= MAX_LABELLED else set(marked)
    starts = fv.bins.groupby("host")["t_s"].transform("min")
    rel = fv.bins["t_s"] - starts
    scale, unit = time_unit(float(rel.max()) if len(rel) else 0.0)
    fig = Figure(figsize=(9, 4.8))
    ax = fig.subplots()
    grey: list[list[tuple[float, float]]] = []
    i = 0
    for host, g in fv.bins.assign(rel=rel / scale).groupby("host", sort=True):
        xy = list(zip(g["rel"], g["memory_mb"]))
        if str(host) not in named:
            grey.append(xy)
            continue
        tags = [t for t, on in (("outlier", host in fv.outlier_hosts), ("FAIL", fv.host(str(host)).verdict != "PASS"))
                if on]
        xs, ys = zip(*xy)
        ax.plot(xs, ys, lw=1.8 if tags else 1.0, color=f"C{i % 10}",
                label=f"{host}" + (f" ({', '.join(tags)})" if tags else "") if i < MAX_LABELLED else None)
        i += 1
    if grey:
        ax.add_collection(LineCollection(grey, colors="0.6", linewidths=0.6, alpha=0.5,
                                         label=f"{len(grey)} other hosts"))
    ax.autoscale()
    ax.set_xlabel(f"{unit} since the host's first sample (after warm-up)")
    ax.set_ylabel("memory (MB, median per bin)")
    ax.set_title(f"Leak curves of {len(fv.hosts)} hosts · fleet {fv.verdict}"
                 + (f" · outliers: {', '.join(fv.outlier_hosts[:MAX_LABELLED])}" if fv.outliers else ""))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def _markdown(fv: FleetVerdict, figures: dict[str, str]) -> str:
    lines = [f"# Fleet signoff: {fv.run_id}", "", f"**Verdict: {fv.verdict}** · soak {fv.soak} · "
             f"{len(fv.hosts)} hosts · {sum(h.verdict != 'PASS' for h in fv.hosts)} failing", ""]
    if fv.outliers:
        lines += ["Outliers (robust z-score of the per-host slope, |z| > 3.5):", ""]
        lines += [f"- **{o.host}**: {o.metric} {o.value:.3g} against the fleet's median {o.median:.3g} "
                  f"(z = {o.z:.1f})" for o in fv.outliers]
        lines.append("")
    lines += ["| host | verdict | memory slope MB/h | FD slope /h | samples | failing rows |",
              "| --- | --- | --- | --- | --- | --- |"]
    for h in fv.hosts:
        bad = ", ".join(r["metric"] for r in h.criteria if r.get("status") == "FAIL") or "–"
        mem = f"{h.memory_slope_mb_per_h:.3g}" if h.memory_slope_mb_per_h is not None else "–"
        fd = f"{h.fd_slope_per_h:.3g}" if h.fd_slope_per_h is not None else "–"
        lines.append(f"| {h.host} | {h.verdict} | {mem} | {fd} | {h.n_samples} | {bad} |")
    for h in fv.hosts:
        if h.reason:
            lines += ["", f"{h.host}: {h.reason}"]
    for name, rel in figures.items():
        lines += ["", f"![{name}]({rel})"]
    t = fv.timing_s
    lines += ["", f"Read with DuckDB in {t.get('duckdb_s', 0):.2f} s, fits {t.get('fits_s', 0):.2f} s, "
                  f"per-host signoffs {t.get('signoffs_s', 0):.2f} s (bins of {fv.bin_s:.3g} s)."]
    return "\n".join(lines) + "\n"


def write_fleet_signoff(run_dir: str | os.PathLike[str] | FleetVerdict, *, figures: bool = True) -> dict[str, Path]:
    """Judge the fleet (or take a verdict already made) and write its signoff and figure."""
    fv = run_dir if isinstance(run_dir, FleetVerdict) else fleet_verdict(run_dir)
    json_path, md_path = signoff_paths(fv.run_dir)
    paths: dict[str, Path] = {}
    rel: dict[str, str] = {}
    fig = leak_curves_figure(fv) if figures else None
    if fig is not None:
        from soaklib.report.plots import save_figure

        png = save_figure(fig, fv.run_dir / "figures" / f"{FIGURE}.png")
        paths[f"{FIGURE}_png"] = png
        rel[FIGURE] = os.path.relpath(png, json_path.parent)
    signoff = fv.to_dict() | {"figures": rel}
    paths["json"] = atomic_write_json(json_path, signoff)
    paths["md"] = atomic_write_text(md_path, _markdown(fv, rel))
    return paths
