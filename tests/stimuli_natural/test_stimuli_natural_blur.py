"""Stage `blur`: the sharp window is the activation-maximising one, on the occlusion grid."""

from __future__ import annotations

import numpy as np
from PIL import Image

from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.stimuli.blur import best_sharp_window, composite
from causalvis.stimuli.occlusion import Grid, blur_image
from causalvis.store.layout import read_json
from causalvis.store.units import read_units


def test_window_search_equals_brute_force_with_both_engines(lite0, samples):
    sharp = samples.load_array(samples.ids[40])
    blurred = blur_image(sharp, 21)
    grid = Grid(224, 90, 67)  # offsets 0, 67, 134 (the border position)
    boxes = [grid.box(i) for i in range(len(grid.positions()))]
    candidates = np.stack([composite(sharp, blurred, b) for b in boxes])
    layer, channel = "blocks.3.2", 7
    brute = probe_tensor(lite0, uint8_to_tensor(candidates), [layer])[layer][:, channel].numpy()
    for engine in ("full", "auto"):
        box, values = best_sharp_window(
            lite0, sharp, blurred, layer, channel, patch=90, stride=67, engine=engine,
            batch_size=4,
        )
        assert values.shape == (3, 3)
        np.testing.assert_allclose(values.ravel(), brute, rtol=1e-4, atol=1e-4)
        assert box == boxes[int(np.argmax(brute))]
        out = composite(sharp, blurred, box)
        inside = np.zeros((224, 224), bool)
        inside[box[1] : box[3], box[0] : box[2]] = True
        np.testing.assert_array_equal(out[inside], sharp[inside])
        np.testing.assert_array_equal(out[~inside], blurred[~inside])


def test_blur_stage_outputs(natural_study, lite0):
    paths = natural_study.paths
    unit = read_units(paths)[0]
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
