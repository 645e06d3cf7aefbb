"""The "blurred" references' core (pure): the sharp window that activates a unit most.

A natural reference is Gaussian-blurred everywhere except one square window on the
occlusion's grid; the window kept sharp is the one whose sharp copy gives the unit's
highest activation. Arrays in, arrays out (uint8 images; the model is the only object).
"""

from __future__ import annotations

import numpy as np

from causalvis.stimuli.occlusion import Grid, Occluder
from causalvis.stimuli.sweep import sweep_layers


def composite(
    sharp: np.ndarray, blurred: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """``blurred`` with the window ``box = (x0, y0, x1, y1)`` taken from ``sharp``."""
    x0, y0, x1, y1 = box
    out = blurred.copy()
    out[y0:y1, x0:x1] = sharp[y0:y1, x0:x1]
    return out


def best_sharp_window(
    model,
    sharp: np.ndarray,
    blurred: np.ndarray,
    layer: str,
    channel: int,
    *,
    patch: int,
    stride: int,
    engine: str = "auto",
    batch_size: int = 64,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The window whose sharp copy maximises the unit, and the unit's activation at every
    grid position ``[n_y, n_x]`` (the occlusion's :class:`Grid`, border included).

    This is an occlusion sweep in reverse: the base image is the blurred one and the
    "patch" shows the sharp pixels, so the same engine (exact incremental inference where
    the architecture allows it) computes it. Ties go to the first position (row-major)."""
    grid = Grid(sharp.shape[0], patch, stride)
    occluder = Occluder(blurred, grid, fill="canvas", canvas=sharp)
    sweep = sweep_layers(model, occluder, [layer], engine, batch_size)
    values = sweep.unit_map(layer, channel)
    return grid.box(int(np.argmax(values))), values
