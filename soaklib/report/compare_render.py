"""How a :class:`~soaklib.report.compare.Comparison` reads: Markdown, console lines, the overlay figure."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from soaklib.report.compare import Comparison

WORDS = {"worse": "**worse**", "better": "better", "same": "no significant change", "too_few": "too few to judge",
         "n/a": "–"}


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if unit == "fraction":
        return f"{x:.1%}"
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def _signed(x: float, unit: str) -> str:
    if not math.isfinite(x):
        return "–"
    return ("+" if x > 0 else "") + _fmt(x, unit)


def interval_text(low: float, high: float, unit: str) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    return f"[{_signed(low, unit)}, {_signed(high, unit)}]"


def to_markdown(c: Comparison, *, figure: str | None = None) -> str:
    """The comparison as a Markdown page: verdict line, differences with intervals, changed criteria."""
    gate = (f"**REGRESSION** on {', '.join(c.regressions)} (exit 1)" if c.regressions
            else (f"no regression on {', '.join(c.fail_on)} (exit 0)" if c.fail_on else "no --fail-on metrics (exit 0)"))
    lines = [
        f"# Comparison: {c.new.run_id} against {c.base.run_id}", "",
        f"- kind: {c.kind}",
        f"- BASE: `{c.base.run_id}` ({c.base.kind}, verdict {c.base.verdict or '–'})",
        f"- NEW: `{c.new.run_id}` ({c.new.kind}, verdict {c.new.verdict or '–'})",
        f"- gate: {gate}", "",
        "## Differences (NEW − BASE)", "",
        "| metric | of | BASE | NEW | Δ | 95% interval | judged |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for d, j in zip(c.differences, c.judgements):
        lines.append(f"| {d.metric} | {d.group or 'run'} | {_fmt(d.base, d.unit)} | {_fmt(d.new, d.unit)} | "
                     f"{_signed(d.delta, d.unit)} {'' if d.unit == 'fraction' else d.unit} | "
                     f"{interval_text(d.low, d.high, d.unit)} | {WORDS[j]} |")
    lines += ["", "## Criteria whose status changed", ""]
    if c.status_changes:
        lines += ["| metric | BASE | NEW | observed BASE | observed NEW |", "| --- | --- | --- | ---: | ---: |"]
        lines += [f"| {s.metric} | {s.base_status or '–'} | {s.new_status or '–'} | {_obs(s.base_observed)} | "
                  f"{_obs(s.new_observed)} |" for s in c.status_changes]
    else:
        lines.append("None: every criterion has the same status in both runs.")
    lines += ["", "## How it is judged", ""]
    methods = sorted({d.method for d in c.differences})
    lines += [f"- {m}" for m in methods]
    rules = ", ".join(f"{r.metric} ({r.worse} is worse, by ≥ " + " or ".join(
        [f"{r.min_effect:g}"] * bool(r.min_effect or not r.min_relative)
        + [f"{r.min_relative:.0%} of BASE"] * bool(r.min_relative)) + ")" for r in c.rules)
    lines += [f"- a change is **worse** only when its whole interval lies on the worse side of 0 and it is at least "
              f"the rule's smallest change: {rules}"]
    lines += [f"- {n}" for n in c.notes]
    if figure:
        lines += ["", f"![overlay]({figure})"]
    return "\n".join(lines) + "\n"


def _obs(x: Any) -> str:
    return _fmt(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else ("–" if x is None else str(x))


def console_lines(c: Comparison) -> list[str]:
    """A few lines for the terminal: the judged differences and the gate."""
    out = [f"compare {c.kind}: NEW {c.new.run_id} against BASE {c.base.run_id}"]
    for d, j in zip(c.differences, c.judgements):
        if j != "n/a":
            of = f" [{d.group}]" if d.group else ""
            out.append(f"  {d.metric}{of}: {_signed(d.delta, d.unit)} {'' if d.unit == 'fraction' else d.unit} "
                       f"{interval_text(d.low, d.high, d.unit)} → {j}")
    for s in c.status_changes:
        out.append(f"  criterion {s.metric}: {s.base_status} → {s.new_status}")
    out.append(f"regression on: {', '.join(c.regressions)}" if c.regressions else "no regression on the gated metrics")
    return out


def overlay_figure(c: Comparison) -> Figure | None:
    """Soaks: memory (MiB) against time since start, both runs; lanes: latency ECDF per provider."""
    import matplotlib.pyplot as plt

    from soaklib.analysis.latency import ecdf

    colors = {"base": "tab:blue", "new": "tab:red"}
    names = {"base": f"BASE {c.base.run_id}", "new": f"NEW {c.new.run_id}"}
    if "memory" in c.series:
        frames = c.series["memory"]
        if all(f.empty for f in frames.values()):
            return None
        from soaklib.report.explore_series import downsample

        fig, ax = plt.subplots(figsize=(8, 3.6))
        for side, f in frames.items():  # MinMaxLTTB: a week at 1 Hz draws as fast as an hour, spikes kept
            x, y = downsample(f["t_s"].to_numpy(dtype=float), f["value"].to_numpy(dtype=float), 4000)
            ax.plot(x, y, color=colors[side], lw=1, label=names[side])
        ax.set_xlabel("time since start (s)")
        ax.set_ylabel("memory (MiB)")
        ax.set_title("Memory of the target, runs aligned by time since start")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        return fig
    frames = c.series.get("latency") or {}
    providers = sorted({p for f in frames.values() for p in f.get("provider", [])})
    if not providers:
        return None
    fig, axes = plt.subplots(1, len(providers), figsize=(3.2 * len(providers), 3.2), squeeze=False, sharey=True)
    for ax, p in zip(axes[0], providers):
        for side, f in frames.items():
            ok = f[(f["provider"] == p) & f["success"]]
            x, y = ecdf(ok["latency_ms"] / 1000.0)
            if x.size:
                ax.step(x, y, where="post", color=colors[side], label=names[side])
        ax.set_title(p)
        ax.set_xlabel("latency (s)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of successful jobs")
    axes[0][0].legend(loc="lower right", fontsize=7)
    fig.suptitle("Latency of successful jobs: BASE and NEW")
    fig.tight_layout()
    return fig
