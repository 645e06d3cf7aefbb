"""Dictionary features and directions as units (issue 20 item 3): loading the SAELens
layout, `probe` against a hand computation from the file, errors, `layers`, occlusion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file as load_np
from safetensors.torch import save_file
from typer.testing import CliRunner

from causalvis.errors import CausalvisError

LAYER = "blocks.3.2"  # lite0: 80 channels, 14x14


def write_sae(folder: Path, *, layer: str = LAYER, d_in: int = 80, d_sae: int = 160,
              activation: str = "relu", k: int | None = None, threshold: float | None = None,
              seed: int = 0, cfg_extra: dict | None = None) -> Path:
    """A random SAE in the SAELens layout (what a test or a user writes)."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": torch.randn(d_in, d_sae, generator=g) / d_in ** 0.5,
               "b_enc": torch.randn(d_sae, generator=g) * 0.1,
               "W_dec": torch.randn(d_sae, d_in, generator=g),
               "b_dec": torch.randn(d_in, generator=g) * 0.1},
              str(folder / "sae_weights.safetensors"))
    cfg = {"hook_name": layer, "d_in": d_in, "d_sae": d_sae, "activation_fn_str": activation}
    if k is not None:
        cfg["activation_fn_kwargs"] = {"k": k}
    if threshold is not None:
        cfg["threshold"] = threshold
    (folder / "cfg.json").write_text(json.dumps({**cfg, **(cfg_extra or {})}))
    return folder


def write_directions(folder: Path, *, layer: str = LAYER, k: int = 4, d_in: int = 80,
                     seed: int = 1) -> Path:
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"directions": torch.randn(k, d_in, generator=g)},
              str(folder / "directions.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"layer": layer}))
    return folder


def hand_sae(x: np.ndarray, folder: Path) -> np.ndarray:
    """Feature means [N, d_sae] of base maps x [N, C, H, W], straight from the files."""
    t = load_np(str(folder / "sae_weights.safetensors"))
    cfg = json.loads((folder / "cfg.json").read_text())
    pre = np.einsum("nchw,cd->ndhw", x - t["b_dec"][None, :, None, None], t["W_enc"])
    pre = pre + t["b_enc"][None, :, None, None]
    act = cfg["activation_fn_str"]
    if act == "relu":
        out = np.maximum(pre, 0)
    elif act == "jumprelu":
        out = np.maximum(pre, 0) * (pre > cfg["threshold"])
    else:
        k = cfg["activation_fn_kwargs"]["k"]
        kth = -np.sort(-pre, axis=1)[:, k - 1 : k]
        out = np.where(pre >= kth, np.maximum(pre, 0), 0)
    return out.mean(axis=(2, 3))


@pytest.fixture(scope="module")
def own_lite0():
    """A lite0 of this module's own: dictionaries are attached to it (not to the shared one)."""
    from causalvis.models import load_model

    return load_model("lite0")


@pytest.fixture(scope="module")
def images(tmp_path_factory, samples):
    from PIL import Image

    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i, image_id in enumerate(list(samples.ids)[:2]):
        path = folder / f"im{i}.png"
        Image.fromarray(samples.load_array(image_id)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def base_maps(lite0, images):
    """The layer's canonical maps of the probe's images, as `probe` prepares them."""
    from causalvis.images import load_image_file, pil_to_tensor, prepare_image
    from causalvis.models import ActivationProbe

    batch = torch.stack([pil_to_tensor(prepare_image(load_image_file(p), lite0.input_size,
                                                     lite0.crop_pct)) for p in images])
    with ActivationProbe(lite0, [LAYER], mode="map") as probe:
        return probe.run(batch)[LAYER].float().numpy().astype(np.float64)


def _app():
    from causalvis.cli import _register_commands, app

    _register_commands()
    return app


def probe_cli(images, units: list[str], dictionaries: list[str]) -> dict[str, np.ndarray]:
    app = _app()

    args = ["probe", "lite0", *map(str, images), "--json"]
    for u in units:
        args += ["--unit", u]
    for d in dictionaries:
        args += ["--dictionary", d]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    return {u: np.array([r["activation"] for r in rows if r["unit"] == u]) for u in units}


KINDS = {"relu": {}, "topk": {"k": 8}, "jumprelu": {"threshold": 0.05}}
FEATS = [3, 17, 101]


@pytest.fixture(scope="module")
def probed(tmp_path_factory, images):
    """One `probe` run: a feature of a relu, a topk and a jumprelu SAE and two directions."""
    root = tmp_path_factory.mktemp("dicts")
    folders = {a: write_sae(root / a, activation=a, seed=i, **extra)
               for i, (a, extra) in enumerate(KINDS.items())}
    folders["dirs"] = write_directions(root / "dirs")
    units = [f"{a}:{j}" for a in KINDS for j in FEATS] + ["dirs:0", "dirs:3"]
    return folders, probe_cli(images, units, [f"{n}={f}" for n, f in folders.items()])


@pytest.mark.parametrize("activation", list(KINDS))
def test_probe_dictionary_feature_equals_hand_computation(probed, base_maps, activation):
    folders, got = probed
    want = hand_sae(base_maps, folders[activation])
    for j in FEATS:
        np.testing.assert_allclose(got[f"{activation}:{j}"], want[:, j], rtol=1e-4, atol=1e-5)
    if activation == "topk":  # at most k features per position are non-zero
        from causalvis.models.dictionary import load_dictionary

        fmap = load_dictionary(folders["topk"])(torch.from_numpy(base_maps).float())
        assert int((fmap > 0).sum(dim=1).max()) <= 8


def test_probe_direction_unit_equals_hand_computation(probed, base_maps):
    folders, got = probed
    v = load_np(str(folders["dirs"] / "directions.safetensors"))["directions"]
    want = np.einsum("nchw,kc->nk", base_maps, v) / (base_maps.shape[2] * base_maps.shape[3])
    np.testing.assert_allclose(got["dirs:0"], want[:, 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["dirs:3"], want[:, 3], rtol=1e-4, atol=1e-5)


def test_layers_lists_dictionaries_with_kind_and_base(tmp_path):
    app = _app()

    sae = write_sae(tmp_path / "sae", activation="topk", k=4)
    dirs = write_directions(tmp_path / "dirs")
    res = CliRunner().invoke(app, ["layers", "lite0", "--dictionary", f"sae1={sae}",
                                   "--dictionary", f"d={dirs}"])
    assert res.exit_code == 0, res.output
    line = next(s for s in res.output.splitlines() if s.startswith("sae1 "))
    assert "dictionary (topk k=4)" in line and "160" in line and f"(on {LAYER})" in line
    assert any(s.startswith("d ") and "directions" in s for s in res.output.splitlines())


@pytest.mark.parametrize("case,match", [
    ("missing", "dictionary not found"),
    ("no_weights", "neither"),
    ("shape", "d_in = 64 but layer blocks.3.2 has 80 channels"),
    ("activation", "unknown activation 'gelu'"),
    ("layer", "not a unit layer of model lite0"),
    ("bias", "b_enc has shape"),
])
def test_dictionary_errors_are_one_line(tmp_path, own_lite0, case, match):
    from causalvis.models import attach_dictionaries

    folder = tmp_path / "sae"
    if case == "no_weights":
        folder.mkdir()
    elif case == "shape":
        write_sae(folder, d_in=64)
    elif case == "activation":
        write_sae(folder, activation="gelu")
    elif case == "layer":
        write_sae(folder, layer="blocks.99")
    elif case == "bias":
        write_sae(folder)
        t = load_np(str(folder / "sae_weights.safetensors"))
        t["b_enc"] = t["b_enc"][:5]
        save_file({k: torch.from_numpy(v) for k, v in t.items()},
                  str(folder / "sae_weights.safetensors"))
    with pytest.raises(CausalvisError, match=match) as err:
        attach_dictionaries(own_lite0, {"sae1": str(folder)})
    assert "\n" not in str(err.value) and "sae1" not in own_lite0.derived


def test_incremental_occlusion_of_dictionary_features_equals_full_sweep(tmp_path, samples,
                                                                        own_lite0):
    from causalvis.models import attach_dictionaries
    from causalvis.stimuli.occlusion import Grid, Occluder
    from causalvis.stimuli.sweep import sweep_layers

    model = own_lite0
    attach_dictionaries(model, {"sae1": str(write_sae(tmp_path / "sae", d_sae=96)),
                                "d": str(write_directions(tmp_path / "dirs"))})
    image = samples.load_array(next(iter(samples.ids)))
    occ = Occluder(image, Grid.for_config(model.input_size, 0.2, 56), fill="grey")
    layers = ["d", "sae1", LAYER]
    inc = sweep_layers(model, occ, layers, "auto", 16)
    full = sweep_layers(model, occ, layers, "full", 16)
    assert inc.engine == "incremental" and full.engine == "full"
    for layer in layers:
        np.testing.assert_allclose(inc.acts[layer], full.acts[layer], rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(inc.base[layer], full.base[layer], rtol=1e-3, atol=1e-4)


def test_featurevis_raises_a_dictionary_feature_and_a_direction(tmp_path, own_lite0):
    from causalvis.featurevis import PixelParam, RenderSettings, TransformSpec, render
    from causalvis.featurevis.objectives import ChannelMean
    from causalvis.models import attach_dictionaries

    attach_dictionaries(own_lite0, {"fv": str(write_sae(tmp_path / "sae", d_sae=32)),
                                    "fvd": str(write_directions(tmp_path / "d"))})
    settings = RenderSettings(steps=6, lr=0.05, transforms=TransformSpec(out_size=64), crop=0)
    for layer, j in (("fv", 5), ("fvd", 2)):
        result = render(own_lite0, ChannelMean(layer, [j]), PixelParam([7], 64, sd=0.01), [7],
                        settings)
        assert result.history[-1] > result.history[0]


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_dictionary_on_a_vit_token_layer_equals_hand_computation(tmp_path, activation):
    """A SAE on a ViT's pre-GELU ``blocks.1.mlp.fc1``: feature j = the mean over patch tokens
    (the class token dropped) of the SAE features of each token, computed from plain timm's
    hooked fc1 output and the safetensors file."""
    import timm

    from causalvis.models import CausalvisModel, attach_dictionaries, probe_tensor

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=2,
                            embed_dim=48, num_heads=2).eval()  # fc1: 192 channels, 16 patches
    model = CausalvisModel("vit", net, (0.5,) * 3, (0.5,) * 3, input_size=64)
    folder = write_sae(tmp_path / "vsae", layer="blocks.1.mlp.fc1", d_in=192, d_sae=64,
                       activation=activation, k=8 if activation == "topk" else None)
    attach_dictionaries(model, {"vsae": str(folder)})
    batch = torch.rand(2, 3, 64, 64)
    got = probe_tensor(model, batch, ["vsae"])["vsae"].double().numpy()
    hooked = {}
    handle = net.blocks[1].mlp.fc1.register_forward_hook(lambda m, a, o: hooked.update(x=o))
    with torch.no_grad():
        net((batch - 0.5) / 0.5)
    handle.remove()
    patches = hooked["x"][:, net.num_prefix_tokens:].double().numpy()  # [N, 16, 192]
    want = hand_sae(patches.transpose(0, 2, 1)[..., None], folder)  # tokens as a 16 x 1 map
    assert want.shape == (2, 64) and np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
