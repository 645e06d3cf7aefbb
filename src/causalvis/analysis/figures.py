"""Publication figures from the summary dictionary (PNG for the report, PDF for papers).

Every function takes plain summary data and returns a matplotlib Figure, so the figures
can be re-drawn from ``summary.json`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

CHANCE = 0.5
_COLORS = {"none": "#8c8c8c", "natural": "#1f77b4", "synthetic": "#d62728",
           "mixed": "#9467bd", "blur": "#2ca02c"}
_STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}


# Up to this many participants per point, points carry their counts instead of bars.
SMALL_N = 5
# Up to this many observer pairs with a κ, the report shows a table instead of a heatmap.
FEW_KAPPA_PAIRS = 10


def mark_simulated(fig: Figure) -> Figure:
    """Label a figure of simulated data inside the figure itself (a diagonal watermark and
    a heading), so it cannot be copied out of the report without the label."""
    fig.text(0.5, 0.5, "SIMULATED", fontsize=44, color="#d62728", alpha=0.18,
             ha="center", va="center", rotation=30, weight="bold", zorder=1000)
    fig.suptitle("SIMULATED DATA — not human responses", color="#d62728", fontsize=10,
                 weight="bold", y=1.04)
    return fig


def ordered(conditions) -> list[str]:
    """Conditions in the paper's order, others after, alphabetically."""
    present = set(conditions)
    known = [c for c in _COLORS if c in present]
    return known + sorted(present - set(known))


def color(cond: str, i: int = 0) -> str:
    return _COLORS.get(cond, plt.get_cmap("tab10")((i + 5) % 10))


def _reference_lines(ax, baseline: float | None) -> None:
    ax.axhline(CHANCE, color="black", lw=0.8, ls=":", label="chance")
    if baseline is not None and np.isfinite(baseline):
        ax.axhline(baseline, color=_COLORS["none"], lw=0.8, ls="--", label="no-reference baseline")


def accuracy_by_condition(conditions: dict[str, dict[str, Any]],
                          observers: dict[str, Any] | None = None,
                          baseline: str = "none") -> Figure:
    """Pooled accuracy per condition: 95 % bootstrap CI (thick) and ±2 SEM (thin caps);
    dashed line: the ``baseline`` condition's accuracy."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(1.2 + 0.75 * max(len(conditions), 2), 3.0))
        names = list(conditions)
        x = np.arange(len(names))
        for i, name in enumerate(names):
            c = conditions[name]
            acc = c["accuracy"]
            ax.bar(i, acc, width=0.6, color=color(name, i), alpha=0.85)
            ax.errorbar(i - 0.08, acc, yerr=[[acc - c["ci_low"]], [c["ci_high"] - acc]],
                        color="black", lw=1.6, capsize=0,
                        label="95 % bootstrap CI" if i == 0 else None)
            if np.isfinite(c.get("sem2") or np.nan):
                ax.errorbar(i + 0.08, acc, yerr=c["sem2"], color="black", lw=0.7, capsize=3,
                            label="±2 SEM (participants)" if i == 0 else None)
        markers = iter("oDs^v<>Ph*")
        for obs_name, obs in (observers or {}).items():
            per = obs.get("conditions") or {}
            pts = [(i, per[n]) for i, n in enumerate(names)
                   if (per.get(n) or {}).get("accuracy") is not None]
            if not pts:
                continue
            xs = np.array([i for i, _ in pts]) + 0.28
            ys = np.array([c["accuracy"] for _, c in pts])
            lo = np.array([c.get("ci_low") if c.get("ci_low") is not None else c["accuracy"]
                           for _, c in pts])
            hi = np.array([c.get("ci_high") if c.get("ci_high") is not None else c["accuracy"]
                           for _, c in pts])
            ax.errorbar(xs, ys, yerr=[ys - lo, hi - ys], ls="none", marker=next(markers, "o"),
                        ms=4, mfc="white", mec="black", ecolor="0.4", elinewidth=0.7,
                        label=f"machine: {obs_name} (95 % CI)")
        _reference_lines(ax, conditions.get(baseline, {}).get("accuracy"))
        ax.set_xticks(x, names)
        ax.set_ylabel("proportion correct")
        lows = [conditions[n]["ci_low"] for n in names if conditions[n]["ci_low"] is not None]
        ax.set_ylim(min([0.3, *[v - 0.05 for v in lows]]), 1.0)
        ax.set_title("Accuracy per condition")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig


def accuracy_by_group(rows: list[dict[str, Any]], by: str, baseline: float | None,
                      title: str) -> Figure:
    """Accuracy per ``by`` value (layer, confidence, …), one line per condition. Points with
    at most :data:`SMALL_N` participants carry their ``correct/trials`` count, and an interval
    of zero width (one participant, or no variation) is not drawn as if it were one."""
    with plt.rc_context(_STYLE):
        values = sorted({r[by] for r in rows}, key=_sort_key)
        fig, ax = plt.subplots(figsize=(max(3.6, 0.75 * len(values) + 1.8), 3.2))
        conds = ordered(r["condition"] for r in rows)
        n = len(conds)
        for i, cond in enumerate(conds):
            rs = {r[by]: r for r in rows if r["condition"] == cond}
            xs = [j + (i - (n - 1) / 2) * 0.16 for j, v in enumerate(values) if v in rs]
            _points(ax, xs, [rs[v] for v in values if v in rs], color(cond, i), cond)
        _reference_lines(ax, baseline)
        tilt = len(values) > 5 or max(len(str(v)) for v in values) > 6
        ax.set_xticks(range(len(values)), [str(v) for v in values],
                      rotation=30 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor")
        ax.set_xlabel(by.replace("_", " "))
        ax.set_ylabel("proportion correct")
        ax.set_ylim(-0.02, 1.1)
        ax.set_title(title)
        _small_n_note(ax, rows)
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig


def _has_interval(r: dict[str, Any]) -> bool:
    lo, hi = r.get("ci_low"), r.get("ci_high")
    return (r.get("n_participants", 2) >= 2 and lo is not None and hi is not None
            and np.isfinite(lo) and np.isfinite(hi) and hi - lo > 1e-9)


def _points(ax, xs: list[float], rs: list[dict[str, Any]], col: Any, label: str) -> None:
    """One condition's points: a line, intervals where they exist, counts at small n."""
    ys = [r["accuracy"] for r in rs]
    if not any(r.get("n_participants", 99) <= SMALL_N for r in rs):  # no lines at small n
        ax.plot(xs, ys, color=col, lw=0.8, alpha=0.6)
    first = True
    for x, r in zip(xs, rs, strict=True):
        small = r.get("n_participants", 99) <= SMALL_N
        if _has_interval(r):
            ax.errorbar([x], [r["accuracy"]], yerr=[[r["accuracy"] - r["ci_low"]],
                        [r["ci_high"] - r["accuracy"]]], color=col, lw=1.0, capsize=2)
        ax.plot([x], [r["accuracy"]], marker="o", ms=6 if small else 4, color=col,
                mfc="white" if not _has_interval(r) else col, ls="none",
                label=label if first else None)
        first = False
        if small and "n_correct" in r:
            ax.annotate(f"{r['n_correct']}/{r['n_trials']}", (x, r["accuracy"]),
                        xytext=(4, 4), textcoords="offset points", fontsize=7, color=col)


def _small_n_note(ax, rows: list[dict[str, Any]]) -> None:
    if any(r.get("n_participants", 99) <= SMALL_N for r in rows):
        ax.text(0.0, -0.3, "labels: correct/trials; hollow: no interval (one participant "
                "or no variation)", transform=ax.transAxes, fontsize=7, color="0.35")


def _sort_key(v: Any) -> tuple[int, Any]:
    try:
        return (0, float(v))
    except (TypeError, ValueError):
        return (1, str(v))


def kappa_pairs(kappa: dict[str, Any]) -> list[tuple[str, str, float, int]]:
    """Every observer pair with a κ: (a, b, κ, shared trials)."""
    if "kappa" not in kappa:
        return []
    mat, labels = np.array(kappa["kappa"], dtype=float), kappa["observers"]
    common = np.array(kappa.get("n_common") or np.zeros_like(mat), dtype=int)
    return [(labels[i], labels[j], float(mat[i, j]), int(common[i, j]))
            for i in range(len(labels)) for j in range(i) if np.isfinite(mat[i, j])]


def kappa_heatmap(kappa: dict[str, Any]) -> Figure:
    """Observer × observer κ (or mean κ per group pair when there are many observers):
    the lower triangle only, without observers who share trials with nobody, labels at
    9 pt or more."""
    full = "kappa" in kappa
    mat = np.array(kappa["kappa"] if full else kappa["group_mean_kappa"], dtype=float)
    labels = list(kappa["observers"] if full else kappa["groups"])
    if full:  # an observer's κ with itself is 1 by definition: leave it out
        np.fill_diagonal(mat, np.nan)
        keep = np.flatnonzero(np.isfinite(mat).any(axis=1))
        mat, labels = mat[np.ix_(keep, keep)], [labels[i] for i in keep]
        mat[np.triu_indices(len(labels))] = np.nan  # symmetric: the lower half says it all
        mat = mat[1:, :-1]  # row 0 and the last column of a lower triangle are empty
        rows, cols = labels[1:], labels[:-1]
    else:
        mat[np.triu_indices(len(labels), 1)] = np.nan
        rows = cols = labels
    with plt.rc_context(_STYLE):
        side = min(9.0, 2.4 + 0.3 * len(rows))
        fig, ax = plt.subplots(figsize=(side + 1.4, side))
        im = ax.imshow(np.ma.masked_invalid(mat), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=9)
        ax.set_yticks(range(len(rows)), rows, fontsize=9)
        if len(rows) <= 14:
            for (i, j), v in np.ndenumerate(mat):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9,
                            color="white" if abs(v) > 0.6 else "black")
        fig.colorbar(im, ax=ax, shrink=0.8, label="Cohen's κ (error consistency)")
        ax.set_title("Error consistency" + ("" if full else " (mean over observer pairs)"))
        ax.spines[:].set_visible(False)
        return fig


def difficulty_plot(diff: dict[str, Any], baseline: float | None) -> Figure:
    """Accuracy per rel_diff quantile bin (x = bin median), one line per condition."""
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        conds = ordered(b["condition"] for b in diff["bins"])
        for i, cond in enumerate(conds):
            bs = sorted((b for b in diff["bins"] if b["condition"] == cond),
                        key=lambda b: b["rel_diff_median"])
            rho = diff["spearman"].get(cond, {}).get("rho")
            label = cond if rho is None or not np.isfinite(rho) else f"{cond} (ρ = {rho:.2f})"
            _points(ax, [b["rel_diff_median"] for b in bs], bs, color(cond, i), label)
        _reference_lines(ax, baseline)
        ax.set_xlabel("relative activation difference (bin median)")
        ax.set_ylabel("proportion correct")
        ax.set_ylim(-0.02, 1.1)
        ax.set_title("Difficulty")
        _small_n_note(ax, diff["bins"])
        ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig


def model_scores(models: dict[str, Any]) -> Figure:
    """Model score (mean per-unit accuracy) with its 95 % bootstrap CI over units, one
    series per condition; models in the study's order (smallest first when known)."""
    with plt.rc_context(_STYLE):
        names = list(models["models"])
        conds = ordered(models["by_condition"])
        fig, ax = plt.subplots(figsize=(max(3.2, 0.7 * len(names) + 1.8), 3.0))
        n = len(conds)
        for i, cond in enumerate(conds):
            rows = {r["model"]: r for r in models["by_condition"][cond]["scores"]}
            xs = [j + (i - (n - 1) / 2) * 0.15 for j, m in enumerate(names) if m in rows]
            ys = np.array([rows[m]["score"] for m in names if m in rows], dtype=float)
            lo = np.array([rows[m]["ci_low"] if rows[m]["ci_low"] is not None else np.nan
                           for m in names if m in rows], dtype=float)
            hi = np.array([rows[m]["ci_high"] if rows[m]["ci_high"] is not None else np.nan
                           for m in names if m in rows], dtype=float)
            yerr = np.nan_to_num(np.vstack([ys - lo, hi - ys]), nan=0.0)
            ax.errorbar(xs, ys, yerr=yerr, marker="o", ms=4, lw=0, elinewidth=1.2, capsize=3,
                        color=color(cond, i), label=cond)
        ax.axhline(CHANCE, color="black", lw=0.8, ls=":", label="chance")
        shown = [models.get("labels", {}).get(m, m) for m in names]
        tilt = len(names) > 4 or max(len(m) for m in shown) > 8
        ax.set_xticks(range(len(names)), shown, rotation=30 if tilt else 0,
                      ha="right" if tilt else "center", rotation_mode="anchor")
        ax.set_xlabel("model" + (" (smallest → largest)" if models.get("order_is_size") else ""))
        ax.set_ylabel("score (mean unit accuracy)")
        ax.set_ylim(0.3, 1.02)
        ax.set_title("Model scores (95 % CI over units)")
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return fig


def tight_bbox(fig: Figure) -> Any:
    """The figure's tight bounding box (inches) plus the usual ``savefig.pad_inches``,
    from its text and artist extents (no draw: these figures use no layout engine)."""
    renderer = fig.canvas.get_renderer()
    return fig.get_tightbbox(renderer).padded(plt.rcParams["savefig.pad_inches"])


def save(fig: Figure, folder: Path, name: str) -> dict[str, Path]:
    """Write ``name.png`` (200 dpi) and ``name.pdf``; close the figure.

    The tight bounding box is measured once and shared by both files: ``bbox_inches=
    "tight"`` would draw the whole figure an extra time per file to find it."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"png": folder / f"{name}.png", "pdf": folder / f"{name}.pdf"}
    bbox = tight_bbox(fig)
    fig.savefig(paths["png"], dpi=200, bbox_inches=bbox)
    fig.savefig(paths["pdf"], bbox_inches=bbox)
    plt.close(fig)
    return paths
