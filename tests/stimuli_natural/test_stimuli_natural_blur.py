"""Stage `blur`: the sharp window is the activation-maximising one, on the occlusion grid."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.stimuli.blur import best_sharp_window, composite
from causalvis.stimuli.occlusion import Grid, blur_image
from causalvis.stimuli.units import load_units
from causalvis.study.layout import read_json


def _noise_square(x0: int, y0: int, side: int = 20, size: int = 64) -> np.ndarray:
    img = np.full((size, size, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    img[y0 : y0 + side, x0 : x0 + side] = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return img


def _closeness_to(sharp: np.ndarray):
    """Score = minus the mean absolute difference to the sharp image."""
    ref = uint8_to_tensor(sharp)

    def score(batch: torch.Tensor) -> torch.Tensor:
        return -(batch - ref).abs().mean(dim=(1, 2, 3))

    return score


def test_window_found_on_constructed_images():
    # grid offsets for 64 px, patch 20, stride 8: 0, 8, ..., 40 and the border 44
    for x0, y0 in [(16, 8), (44, 44), (0, 44)]:
        sharp = _noise_square(x0, y0)
        blurred = blur_image(sharp, 21)
        box, grid = best_sharp_window(sharp, blurred, _closeness_to(sharp), patch=20, stride=8,
                                      batch_size=5)
        assert box == (x0, y0, x0 + 20, y0 + 20)
        assert grid.shape == (7, 7)
        assert int(np.argmax(grid)) == 7 * (Grid(64, 20, 8).offsets.tolist().index(y0)) + \
            Grid(64, 20, 8).offsets.tolist().index(x0)
        _, grid_big = best_sharp_window(sharp, blurred, _closeness_to(sharp), patch=20, stride=8,
                                        batch_size=64)
        np.testing.assert_allclose(grid, grid_big, rtol=1e-6, atol=1e-7)
        out = composite(sharp, blurred, box)
        inside = np.zeros((64, 64), bool)
        inside[y0 : y0 + 20, x0 : x0 + 20] = True
        np.testing.assert_array_equal(out[inside], sharp[inside])
        np.testing.assert_array_equal(out[~inside], blurred[~inside])


def test_blur_stage_outputs(natural_study, lite0):
    paths = natural_study.paths
    unit = load_units(paths)[0]
    meta = read_json(paths.reference_dir("blur", unit.key) / "meta.json")
    natural_meta = read_json(paths.reference_dir("natural", unit.key) / "meta.json")
    assert meta["patch"] == 90 and meta["kernel"] == 21 and meta["stride"] == 67
    assert [m["file"] for m in meta["images"]] == [m["file"] for m in natural_meta["images"]]
    grid = Grid(224, 90, 67)  # offsets 0, 67, 134 (border)
    boxes = [grid.box(i) for i in range(9)]
    for item in meta["images"][:2]:
        with Image.open(paths.reference_dir("natural", unit.key) / item["file"]) as img:
            sharp = np.array(img.convert("RGB"))
        with Image.open(paths.reference_dir("blur", unit.key) / item["file"]) as img:
            served = np.array(img.convert("RGB"))
        box = tuple(int(v) for v in item["box"].split())
        assert box in boxes
        blurred = blur_image(sharp, 21)
        np.testing.assert_array_equal(served, composite(sharp, blurred, box))
        candidates = np.stack([composite(sharp, blurred, b) for b in boxes])
        acts = probe_tensor(lite0, uint8_to_tensor(candidates), [unit.layer])[unit.layer]
        acts = acts[:, unit.channel].numpy()
        assert boxes[int(np.argmax(acts))] == box
        assert abs(float(acts.max()) - item["activation"]) < 1e-4
        assert abs(item["grid_max"] - item["activation"]) < 1e-4
        assert isinstance(item["activation_all_blurred"], float)  # may exceed: units can like blur
