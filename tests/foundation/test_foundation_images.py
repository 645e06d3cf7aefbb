"""Image sources: the embedded sample set and folders with corrupt files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.images import FolderSource, SampleSource, open_source, pil_to_tensor, prepare_image
from causalvis.models import probe_tensor


def test_samples_are_several_hundred_deterministic_crops():
    a, b = SampleSource(224), SampleSource(224)
    assert 300 <= len(a) <= 1000
    assert a.ids == b.ids
    img = a.load(a.ids[7])
    assert img.size == (224, 224) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(b.load(a.ids[7])))
    photos = {i.split("/")[0] for i in a.ids}
    assert {"chelsea", "coffee", "astronaut", "china"} <= photos


def test_sklearn_photos_are_the_pixels_sklearn_loads_without_importing_its_datasets():
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; from causalvis.images.sources import _photo_loaders; "
        "L = _photo_loaders(); a = L['china'](); b = L['flower'](); "
        "assert 'sklearn.datasets' not in sys.modules; "
        "from sklearn.datasets import load_sample_image as f; "
        "assert np.array_equal(a, f('china.jpg')) and np.array_equal(b, f('flower.jpg'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_prepare_image_resize_crop_and_identity_at_model_size():
    big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8))
    out = prepare_image(big, 224)
    assert out.size == (224, 224)
    same = Image.fromarray(np.asarray(out))
    assert prepare_image(same, 224) is not None
    assert np.array_equal(np.asarray(prepare_image(same, 224)), np.asarray(out))


def test_saved_stimulus_reproduces_its_activation_exactly(lite0, samples, tmp_path):
    img = samples.load(samples.ids[3])
    path = tmp_path / "stim.png"
    img.save(path)
    from causalvis.images import load_image_file

    again = prepare_image(load_image_file(path), 224)
    a = probe_tensor(lite0, pil_to_tensor(img)[None], ["blocks.3.2"])["blocks.3.2"]
    b = probe_tensor(lite0, pil_to_tensor(again)[None], ["blocks.3.2"])["blocks.3.2"]
    assert torch.equal(a, b)


def test_folder_source_skips_and_reports_corrupt_files(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "sub").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), np.uint8)).save(tmp_path / f"ok{i}.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), np.uint8)).save(tmp_path / "sub" / "deep.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    src = FolderSource(tmp_path, 224)
    assert len(src) == 6
    got = list(src.iter_images())
    assert [i for i, _ in got] == ["ok0.png", "ok1.png", "ok2.png", "sub/deep.jpg"]
    assert all(arr.shape == (224, 224, 3) for _, arr in got)
    assert sorted(s.image_id for s in src.skipped) == ["broken.jpg", "empty.png"]
    assert all("cannot decode" in s.reason for s in src.skipped)


def test_open_source_errors(tmp_path):
    with pytest.raises(CausalvisError, match="not found"):
        open_source(tmp_path / "nope", 224)
    with pytest.raises(CausalvisError, match="no images"):
        _ = open_source(tmp_path, 224).ids
    assert isinstance(open_source("samples", 224), SampleSource)


def test_iter_images_decodes_a_bounded_lookahead(tmp_path):
    """At most ``lookahead`` images are decoded beyond the one the consumer holds (memory
    stays flat), and a batching consumer can ask for a whole batch ahead."""
    for i in range(40):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i:02d}.png")

    class Counting(FolderSource):
        loads = 0

        def load_array(self, image_id):
            Counting.loads += 1
            return super().load_array(image_id)

    for lookahead, expected in ((None, 1 + 8), (20, 1 + 20), (3, 1 + 3)):
        Counting.loads = 0
        it = Counting(tmp_path, 16).iter_images(workers=2, lookahead=lookahead)
        assert next(it)[0] == "00.png"
        it.close()  # the pool finishes what was submitted, nothing more
        assert Counting.loads == expected
    assert len(list(Counting(tmp_path, 16).iter_images(lookahead=5))) == 40
