"""Heatmap figure per (unit, query): what each occlusion does to the unit.

Four panels: the query with both patch boxes, the two occluded options (A = occlusion
leaving the most activation, B = the least), and the activation map over patch
positions, drawn in image coordinates (each cell sits at its patch centre) with A and B
marked. Researchers use these to sanity-check trials, so the map uses a diverging
colour scale centred on the unoccluded activation: red = occluding here *raises* the
unit, blue = occluding here *lowers* it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from causalvis.stimuli.occlusion import Grid
from causalvis.store.layout import atomic_path

COLOR_A = "#1b9e77"
COLOR_B = "#d95f02"


def render_heatmap(
    path: str | Path,
    query: np.ndarray,
    act_map: np.ndarray,
    act_base: float,
    grid: Grid,
    *,
    index_a: int | None = None,
    index_b: int | None = None,
    option_a: np.ndarray | None = None,
    option_b: np.ndarray | None = None,
    title: str = "",
    note: str = "",
) -> None:
    """Write the figure as PNG (atomically). Indices are flat grid positions."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    has_pair = index_a is not None and index_b is not None
    panels = 4 if has_pair and option_a is not None and option_b is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.3 * panels + 0.6, 3.9), dpi=110,
                             gridspec_kw={"width_ratios": [1] * (panels - 1) + [1.2]})
    s = grid.size
    flat = np.asarray(act_map, dtype=np.float64)

    def boxes(ax) -> None:
        for idx, color, label in ((index_a, COLOR_A, "A"), (index_b, COLOR_B, "B")):
            if idx is None:
                continue
            x0, y0, x1, y1 = grid.box(idx)
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                                   lw=2.2, ec=color))
            ax.text(x0 + 3, y0 + 3, label, color="white", fontsize=10, fontweight="bold",
                    va="top", ha="left", bbox={"fc": color, "ec": "none", "pad": 1.5})

    ax = axes[0]
    ax.imshow(query, interpolation="nearest")
    boxes(ax)
    ax.set_title(f"query  (unoccluded {act_base:.3f})", fontsize=9)
    if panels == 4:
        for ax, img, idx, color, name in (
            (axes[1], option_a, index_a, COLOR_A, "A (keeps most)"),
            (axes[2], option_b, index_b, COLOR_B, "B (keeps least)"),
        ):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{name}: {flat.ravel()[idx]:.3f}", fontsize=9, color=color)
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
    ax = axes[-1]
    centres = grid.offsets + grid.patch / 2.0
    edges = _cell_edges(centres)
    dev = float(np.max(np.abs(flat - act_base))) or 1e-9
    norm = Normalize(vmin=act_base - dev, vmax=act_base + dev)
    ax.imshow(query, alpha=0.25, interpolation="nearest", extent=(0, s, s, 0))
    im = ax.pcolormesh(edges, edges, flat, cmap="RdBu_r", norm=norm, shading="flat")
    ax.set_xlim(0, s)
    ax.set_ylim(s, 0)
    ax.add_patch(Rectangle((0, 0), s, s, fill=False, lw=0.8, ec="0.6", ls=":"))
    for idx, color, label in ((index_a, COLOR_A, "A"), (index_b, COLOR_B, "B")):
        if idx is None:
            continue
        x0, y0, x1, y1 = grid.box(idx)
        ax.plot((x0 + x1) / 2, (y0 + y1) / 2, marker="o", ms=9, mfc="none", mec=color, mew=2.4)
        ax.annotate(label, ((x0 + x1) / 2, (y0 + y1) / 2), xytext=(6, -6),
                    textcoords="offset points", color=color, fontsize=10, fontweight="bold")
    ax.set_title("activation with the patch centred here", fontsize=9)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.ax.tick_params(labelsize=7)
    cbar.ax.axhline(act_base, color="k", lw=1)
    cbar.set_label("unit activation (black line: unoccluded)", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    sub = f"patch {grid.patch}px, stride {grid.stride}px, {flat.size} positions"
    fig.suptitle(f"{title}\n{sub}" + (f" — {note}" if note else ""), fontsize=10)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _cell_edges(centres: np.ndarray) -> np.ndarray:
    """Cell boundaries halfway between neighbouring patch centres (uneven last step)."""
    c = np.asarray(centres, dtype=np.float64)
    if len(c) == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2.0
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
