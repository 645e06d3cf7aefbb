"""The numeric core: grid, fills, the batched truncated sweep, the trial rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.stimuli.occlusion import (
    GREY_U8,
    Grid,
    Occluder,
    blur_image,
    grid_offsets,
    noise_image,
    occlusion_sweep,
    patch_means,
    patch_side,
)
from causalvis.stimuli.trial_rule import allowed_b, rank_candidates, select_pair


@pytest.fixture(scope="module")
def query(samples):
    return samples.load_array("chelsea/s0.60/r1c1")


def test_paper_grid_is_90px_and_68_by_68():
    assert patch_side(224, 0.4) == 90
    assert patch_side(224, 0.3) == 67 and patch_side(224, 0.5) == 112
    off = grid_offsets(224, 90, 2)
    assert len(off) == 68 and off[0] == 0 and off[-1] == 134
    assert Grid(224, 90, 2).positions().shape == (68 * 68, 2)


@pytest.mark.parametrize("stride", [3, 7, 16, 24, 50])
def test_border_positions_included(stride):
    grid = Grid(224, 90, stride)
    off = grid.offsets
    assert off[-1] == 224 - 90 and off[0] == 0
    assert np.all(np.diff(off) >= 1) and np.all(np.diff(off) <= stride)
    covered = np.zeros(224, dtype=bool)
    for o in off:
        covered[o : o + 90] = True
    assert covered.all()
    assert grid.box(len(grid.positions()) - 1) == (134, 134, 224, 224)


def test_mean_colour_fill_matches_definition(query):
    grid = Grid(224, 90, 8)
    occ = Occluder(query, grid, fill="mean")
    rng = np.random.default_rng(1)
    idx = rng.choice(len(occ), size=6, replace=False)
    built = occ.build(idx)
    for img, i in zip(built, idx, strict=True):
        x0, y0, x1, y1 = grid.box(i)
        under = query[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64)
        expected = np.floor(under.mean(axis=0) + 0.5).astype(np.uint8)
        assert np.array_equal(img[y0:y1, x0:x1], np.broadcast_to(expected, (90, 90, 3)))
        outside = np.ones((224, 224), dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(img[outside], query[outside])
    # the summed-area table agrees with the direct mean everywhere
    pos = grid.positions()
    direct = np.stack([
        np.floor(query[y : y + 90, x : x + 90].reshape(-1, 3).mean(0) + 0.5) for y, x in pos[:50]
    ]).astype(np.uint8)
    assert np.array_equal(patch_means(query, pos[:50], 90), direct)


def test_grey_blur_noise_fills(query):
    grid = Grid(224, 90, 67)
    i = 5
    x0, y0, x1, y1 = grid.box(i)
    grey = Occluder(query, grid, fill="grey").build([i])[0]
    assert np.all(grey[y0:y1, x0:x1] == GREY_U8)
    blurred = blur_image(query, 21)
    blur = Occluder(query, grid, fill="blur", blur_kernel=21).build([i])[0]
    assert np.array_equal(blur[y0:y1, x0:x1], blurred[y0:y1, x0:x1])
    assert not np.array_equal(blurred[y0:y1, x0:x1], query[y0:y1, x0:x1])
    n1 = Occluder(query, grid, fill="noise", seed=3).build([i])[0]
    n2 = Occluder(query, grid, fill="noise", seed=3).build([i])[0]
    n3 = Occluder(query, grid, fill="noise", seed=4).build([i])[0]
    assert np.array_equal(n1, n2) and not np.array_equal(n1, n3)
    assert np.array_equal(n1[y0:y1, x0:x1], noise_image(224, 3)[y0:y1, x0:x1])
    with pytest.raises(ValueError, match="fill"):
        Occluder(query, grid, fill="pink")


def test_sweep_equals_naive_forward_per_image(lite0, query):
    grid = Grid(224, 90, 40)  # offsets 0, 40, 80, 120, 134: 25 positions
    occ = Occluder(query, grid, fill="mean")
    sweep = occlusion_sweep(lite0, occ, ["blocks.2.1", "blocks.1.1"], batch_size=7)
    assert sweep.acts["blocks.2.1"].shape == (5, 5, 40)
    assert sweep.acts["blocks.1.1"].shape == (5, 5, 24)
    base = probe_tensor(lite0, uint8_to_tensor(query[None].copy()), ["blocks.2.1"])["blocks.2.1"][0]
    assert np.allclose(sweep.base["blocks.2.1"], base.numpy(), rtol=1e-5, atol=1e-5)
    for iy, ix in [(0, 0), (4, 4), (2, 3), (4, 0)]:  # includes both border positions
        y, x = grid.offsets[iy], grid.offsets[ix]
        naive = query.copy()
        colour = np.floor(query[y : y + 90, x : x + 90].reshape(-1, 3).mean(0) + 0.5)
        naive[y : y + 90, x : x + 90] = colour.astype(np.uint8)
        ref = probe_tensor(lite0, uint8_to_tensor(naive[None]), ["blocks.2.1"])["blocks.2.1"][0]
        assert np.allclose(sweep.acts["blocks.2.1"][iy, ix], ref.numpy(), rtol=1e-4, atol=1e-5)
    # occlusion changes activations, so the map is not constant
    assert np.ptp(sweep.unit_map("blocks.2.1", 3)) > 0


def test_sweep_counts_progress(lite0, query):
    seen = []
    occlusion_sweep(lite0, Occluder(query, Grid(224, 112, 112)), ["blocks.1.1"],
                    batch_size=3, on_batch=seen.append)
    assert sum(seen) == 4 and seen == [3, 1]


# -- trial rule --------------------------------------------------------------------------

def test_argmax_argmin_are_true_extremes():
    grid = Grid(224, 90, 8)
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = rng.normal(size=grid.shape)
        pair = select_pair(m, 1.0, grid)
        assert pair.act_a == m.max() and pair.act_b == m.min()
        assert m.ravel()[pair.index_a] == m.max() and m.ravel()[pair.index_b] == m.min()
        assert pair.rel_diff == pytest.approx(m.max() - m.min())


def test_constrained_b_is_argmin_among_allowed():
    grid = Grid(224, 90, 16)
    rng = np.random.default_rng(2)
    m = rng.normal(size=grid.shape)
    pos = grid.positions()
    for dist, no_overlap in [(100.0, False), (0.0, True), (60.0, True)]:
        pair = select_pair(m, 2.0, grid, min_distance=dist, no_overlap=no_overlap)
        a, b = pos[pair.index_a], pos[pair.index_b]
        assert np.hypot(*(a - b)) >= dist
        if no_overlap:
            ax0, ay0, ax1, ay1 = grid.box(pair.index_a)
            bx0, by0, bx1, by1 = grid.box(pair.index_b)
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
        ok = [i for i in range(len(pos)) if i != pair.index_a
              and np.hypot(*(pos[i] - a)) >= dist
              and (not no_overlap or max(abs(pos[i] - a)) >= 90)]
        assert pair.act_b == min(m.ravel()[ok])
    assert not allowed_b(grid, 0, 1000.0, False).any()
    assert select_pair(m, 2.0, grid, min_distance=1000.0) is None


def test_min_rel_diff_and_candidates():
    grid = Grid(224, 112, 112)
    m = np.array([[1.0, 0.9], [0.95, 0.8]])
    assert select_pair(m, 1.0, grid, min_rel_diff=0.3) is None
    pair = select_pair(m, 1.0, grid, min_rel_diff=0.1)
    assert pair.rel_diff == pytest.approx(0.2)
    big = select_pair(m * 3, 1.0, grid)
    assert rank_candidates([pair, None, big]) == [2, 0]
    assert rank_candidates([None, None]) == []


def test_occluder_rejects_wrong_size(query):
    with pytest.raises(ValueError, match="224x224x3"):
        Occluder(query[:100], Grid(224, 90, 8))
    assert torch.is_tensor(Occluder(query, Grid(224, 90, 67)).build_tensor([0], torch.device("cpu")))


@pytest.mark.parametrize("fill", ["mean", "grey", "blur", "noise"])
def test_float_build_and_patches_match_the_uint8_images(fill):
    """The sweep's channels-last float batch is the exact decode of the uint8 images, and
    the incremental engine's patch pixels are exactly what those images hold there."""
    from causalvis.stimuli.occlusion import to_float

    img = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    occ = Occluder(img, Grid.for_config(40, 0.4, 7), fill=fill, blur_kernel=5, seed=2)
    idx, cpu = np.arange(len(occ)), torch.device("cpu")
    u8 = occ.build_tensor(idx, cpu)
    f32 = occ.build_float(idx, cpu)
    assert f32.dtype == torch.float32 and f32.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(f32, to_float(u8))
    p = occ.grid.patch
    crops = torch.stack([u8[i, :, y : y + p, x : x + p] for i, (y, x) in enumerate(occ.positions)])
    assert torch.equal(occ.build_patches(idx, cpu), crops)
