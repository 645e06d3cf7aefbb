"""figures.save: one tight bounding box, measured without drawing, shared by PNG and PDF."""

from __future__ import annotations

import matplotlib.pyplot as plt
from PIL import Image

from causalvis.analysis import figures


def _figure():
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1], label="a long legend entry outside the axes")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("title")
    return fig


def test_save_draws_once_per_file_and_keeps_the_outside_legend(tmp_path, monkeypatch):
    draws = []
    original = plt.Figure.draw

    def counting(self, renderer):
        draws.append(type(renderer).__name__)
        return original(self, renderer)

    monkeypatch.setattr(plt.Figure, "draw", counting)
    fig = _figure()
    bbox = figures.tight_bbox(fig)
    assert not draws  # measuring the box draws nothing
    assert bbox.width > 3.0  # the legend right of the 3-inch figure is inside the box
    paths = figures.save(fig, tmp_path, "f")
    assert len(draws) == 2  # one per file ("tight" would draw each file twice)
    w, h = Image.open(paths["png"]).size
    assert abs(w / 200 - bbox.width) < 0.02 and abs(h / 200 - bbox.height) < 0.02
    assert paths["pdf"].read_bytes().startswith(b"%PDF")
