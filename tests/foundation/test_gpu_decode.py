"""GPU JPEG decoding for scans: when it is chosen, and its logic (run here on the CPU).

``iter_gpu_batches`` takes the device as an argument, so torchvision's CPU decoder stands
in for nvjpeg: the batching, the prefetch, the resize/crop geometry and the corrupt-file
fallback are the same code; only nvjpeg's own pixels need the GPU (benchmarks/gpu_suite.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from causalvis.images import FolderSource, SampleSource, load_image_file, prepare_image
from causalvis.images.gpu_decode import gpu_decode_reason, iter_gpu_batches, resize_crop_gpu

CUDA = torch.device("cuda")  # a device object needs no GPU


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(3)
    for i, (h, w) in enumerate([(96, 96), (96, 96), (120, 80), (64, 150), (224, 224)]):
        base = rng.integers(0, 255, (4, 4, 3), np.uint8)
        img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        img.save(folder / f"im{i}.jpg", quality=92)
    Image.fromarray(rng.integers(0, 255, (40, 40), np.uint8), mode="L").save(folder / "grey.jpg")
    (folder / "zbroken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return folder


def test_gpu_decoding_is_chosen_only_for_cuda_and_a_folder_of_jpegs(jpegs, tmp_path):
    src = FolderSource(jpegs, 224)
    assert gpu_decode_reason(src, CUDA, src.ids) is None
    assert gpu_decode_reason(src, "cuda:0", src.ids, "gpu") is None
    assert gpu_decode_reason(src, "cpu", src.ids) == "not a CUDA device"
    assert gpu_decode_reason(src, CUDA, src.ids, "cpu") == "decode = cpu"
    assert gpu_decode_reason(SampleSource(224), CUDA, ["chelsea/s1.00/r0c0"]) == \
        "not a folder source"
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    png = FolderSource(tmp_path, 224)
    assert gpu_decode_reason(png, CUDA, png.ids) == "not all images are JPEGs"
    assert gpu_decode_reason(src, CUDA, []) == "not all images are JPEGs"
    with pytest.raises(ValueError, match="decode must be"):
        gpu_decode_reason(src, CUDA, src.ids, "nvjpeg")


def test_resize_crop_matches_prepare_image(jpegs):
    """The GPU path crops the region PIL crops, within a level or two of rounding."""
    src = FolderSource(jpegs, 224)
    for image_id in ["im0.jpg", "im2.jpg", "im3.jpg", "im4.jpg"]:
        pil = load_image_file(jpegs / image_id)
        ref = np.asarray(prepare_image(pil, 224, src.crop_pct), dtype=np.int16)
        x = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
        got = resize_crop_gpu([x], 224, src.crop_pct)[0].permute(1, 2, 0).numpy()
        diff = np.abs(got.astype(np.int16) - ref)
        assert got.shape == (224, 224, 3) and diff.max() <= 2 and diff.mean() < 0.5, image_id


def test_batches_skip_corrupt_files_and_agree_with_the_cpu_path(jpegs):
    src = FolderSource(jpegs, 224)
    got = list(iter_gpu_batches(src, src.ids, 3, torch.device("cpu"), workers=2))
    names = [n for batch, _ in got for n in batch]
    assert names == [i for i in src.ids if i != "zbroken.jpg"]  # order kept, grey decoded
    assert [s.image_id for s in src.skipped] == ["zbroken.jpg"]
    assert "cannot decode" in src.skipped[0].reason
    x = torch.cat([b for _, b in got])
    assert x.dtype == torch.float32 and x.shape == (6, 3, 224, 224)
    ref = torch.from_numpy(np.stack([src.load_array(i) for i in names])).permute(0, 3, 1, 2)
    assert (x * 255 - ref.float()).abs().max() <= 3
