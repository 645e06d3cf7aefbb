"""Units beyond channels-first CNNs (issue 20, items 1-2): ViT token layers under a token
policy, channels-last maps, and any nn.Module through a ``python:`` factory - each read
equal to an independent computation with plain timm / torch hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_user_models import _cli  # the one CLI runner of these tests

from causalvis.errors import CausalvisError
from causalvis.images import pil_to_tensor, prepare_image
from causalvis.models import CausalvisModel, list_layers, load_model, probe_tensor

VIT = "timm:vit_tiny_patch16_224"




@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    """A seeded random ViT-Tiny, its state dict on disk (so plain timm and causalvis read
    the same network) and two images."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    path = tmp_path_factory.mktemp("vit") / "vit.pth"
    torch.save(net.state_dict(), path)
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        img = tmp_path_factory.getbasetemp() / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)).save(img)
        images.append(img)
    return net, path, images


@pytest.fixture(scope="module")
def small_vit():
    """ViT-Tiny's architecture at 64 px (4x4 patch grid): plain timm net and its wrapper."""
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    cfg = net.pretrained_cfg
    return net, CausalvisModel("vit", net, cfg["mean"], cfg["std"], input_size=64)


def _timm_fc1(net, images, pick) -> torch.Tensor:
    """Plain timm: hook blocks[3].mlp.fc1 (pre-GELU), average the picked tokens."""
    got = {}
    handle = net.blocks[3].mlp.fc1.register_forward_hook(lambda m, a, o: got.update(x=o))
    cfg = net.pretrained_cfg
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        net((images - mean) / std)
    handle.remove()
    return pick(got["x"])[:, :, 17].mean(dim=1)


def test_layers_command_lists_token_layers(capsys):
    code, out, err = _cli(capsys, "layers", VIT, "--weights", "random")
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "tokens (linear)" in rows["blocks.3.mlp.fc1"]
    assert rows["blocks.3.mlp.fc1"].split()[-2:] == ["768", "14x14"]
    assert "tokens (block)" in rows["blocks.3"] and "tokens (norm)" in rows["blocks.3.norm1"]
    assert "tokens (linear)" in rows["blocks.3.attn.proj"]
    assert "blocks.3.attn.qkv" not in rows  # q, k, v mixed in one tensor: not a unit layer
    assert "read patch tokens" in out


@pytest.mark.parametrize("policy, pick, size", [
    ("patch", lambda x: x[:, 1:], (4, 4)),
    ("cls", lambda x: x[:, :1], (1, 1)),
    ("all", lambda x: x, (17, 1)),
])
def test_probe_on_fc1_equals_plain_timm(small_vit, policy, pick, size):
    net, model = small_vit
    model.tokens = policy  # what load_model(..., tokens=policy) sets (CLI test below)
    info = {i.name: i for i in list_layers(model)}["blocks.3.mlp.fc1"]
    assert (info.layout, info.tokens, (info.height, info.width)) == ("tokens", policy, size)
    batch = torch.rand(2, 3, 64, 64)
    got = probe_tensor(model, batch, ["blocks.3.mlp.fc1"])["blocks.3.mlp.fc1"][:, 17]
    torch.testing.assert_close(got, _timm_fc1(net, batch, pick), rtol=1e-4, atol=1e-5)


def test_probe_command_reads_the_token_policy(vit_weights, capsys):
    """``causalvis probe timm:vit_tiny_patch16_224 --tokens cls`` = plain timm's class
    token of blocks.3.mlp.fc1, channel 17 (the patch policy: the parametrized test)."""
    net, path, images = vit_weights
    code, text, err = _cli(capsys, "probe", VIT, str(images[0]), "--unit",
                           "blocks.3.mlp.fc1:17", "--weights", str(path), "--tokens", "cls")
    assert code == 0, err
    crop = net.pretrained_cfg["crop_pct"]
    batch = pil_to_tensor(prepare_image(Image.open(images[0]).convert("RGB"), 224, crop))
    expected = _timm_fc1(net, batch[None], lambda x: x[:, :1])
    assert float(text.split()[-1]) == pytest.approx(float(expected), rel=1e-4, abs=1e-5)
    code, _, err = _cli(capsys, "probe", VIT, str(images[0]), "--unit", "blocks.3.mlp.fc1:1",
                        "--weights", "random", "--tokens", "middle")
    assert code == 1 and err.strip().startswith("error: ") and "patch, cls, all" in err


def test_channels_last_maps_are_permuted_units():
    """ConvNeXt (conv_mlp=False: LayerNorm / Linear over the last dim) and Swin layers are
    layout nhwc; the canonical map is the hooked tensor permuted to channels-first."""
    import timm

    from causalvis.models import ActivationProbe

    net = timm.create_model("convnext_atto", pretrained=False, conv_mlp=False)
    model = CausalvisModel("cnx", net, (0.5,) * 3, (0.5,) * 3, input_size=64)
    infos = {i.name: i for i in list_layers(model)}
    fc1 = infos["stages.1.blocks.0.mlp.fc1"]
    assert (fc1.layout, fc1.kind, fc1.channels, fc1.height) == (
        "nhwc", "channels-last (linear)", 320, 8)
    assert infos["stages.1.blocks.0.norm"].kind == "channels-last (norm)"
    x = torch.rand(2, 3, 64, 64)
    got = {}
    handle = net.stages[1].blocks[0].mlp.fc1.register_forward_hook(lambda m, a, o: got.update(o=o))
    with torch.no_grad():
        model(x)
    handle.remove()
    with ActivationProbe(model, ["stages.1.blocks.0.mlp.fc1"], mode="map",
                         channels_last=False) as probe:
        maps = probe.run(x)["stages.1.blocks.0.mlp.fc1"]
    torch.testing.assert_close(maps, got["o"].permute(0, 3, 1, 2), rtol=1e-5, atol=1e-6)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=128,
                             window_size=4, embed_dim=24, depths=(1, 1, 1, 1),
                             num_heads=(1, 1, 1, 1))
    sw = CausalvisModel("swin", swin, (0.5,) * 3, (0.5,) * 3, input_size=128)
    block = {i.name: i for i in list_layers(sw)}["layers.1.blocks.0"]
    assert (block.kind, block.channels, block.height) == ("channels-last (block)", 48, 16)
    acts = probe_tensor(sw, torch.rand(1, 3, 128, 128), ["layers.1.blocks.0"])
    assert acts["layers.1.blocks.0"].shape == (1, 48)


FACTORY = '''
import torch
from torch import nn
from causalvis.models import UserModel

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.bn2 = nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))

def make():
    torch.manual_seed(1)
    return UserModel(Net(), input_size=48, mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2),
                     crop_pct=1.0)

def as_dict():
    return {"net": Net(), "input_size": 40}

def broken():
    raise ValueError("no such checkpoint")

def wrong():
    return Net()
'''


def test_python_factory_model(tmp_path, capsys):
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY)
    model = load_model(f"python:{path}:make")
    assert (model.input_size, model.crop_pct) == (48, 1.0)
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.4] * 3))
    assert [i.name for i in list_layers(model)] == ["bn1", "bn2"]
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        expected = model.net.bn2(model.net.conv2(torch.relu(model.net.bn1(
            model.net.conv1((x - 0.4) / 0.2))))).mean(dim=(2, 3))
    torch.testing.assert_close(probe_tensor(model, x, ["bn2"])["bn2"], expected)
    assert load_model(f"python:{path}:as_dict").input_size == 40
    # weights: a state dict saved from the factory's net loads into it
    state = tmp_path / "w.pth"
    torch.save({k: torch.zeros_like(v) for k, v in model.net.state_dict().items()}, state)
    zeroed = load_model(f"python:{path}:make", weights=str(state))
    assert float(zeroed.net.conv1.weight.abs().sum()) == 0.0
    code, out, err = _cli(capsys, "layers", f"python:{path}:make")
    assert code == 0 and "bn2" in out, err


@pytest.mark.parametrize("target, message", [
    ("no_such_pkg_causalvis.mod:make", "no module named 'no_such_pkg_causalvis'"),
    ("{dir}/missing.py:make", "file not found"),
    ("{dir}/mynet.py:nothing", "has no function 'nothing'"),
    ("{dir}/mynet.py:broken", "the factory raised ValueError: no such checkpoint"),
    ("{dir}/mynet.py:wrong", "returned Net, not a causalvis.models.UserModel"),
    ("{dir}/mynet.py", "use python:pkg.module:factory"),
])
def test_python_factory_errors_are_one_line(tmp_path, capsys, target, message):
    (tmp_path / "mynet.py").write_text(FACTORY)
    name = "python:" + target.format(dir=tmp_path)
    with pytest.raises(CausalvisError, match=message):
        load_model(name)
    code, _, err = _cli(capsys, "layers", name)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.split(":")[0] in lines[0] and "Traceback" not in err


def test_feature_visualization_of_a_token_unit(tmp_path):
    """Channel objectives read the canonical map of a token layer: both renderers (Lucid's
    recipe on a canvas of another size than the ViT's input, and MACO) raise the unit's
    activation above that of a grey image, and the reported value is the probe's."""
    import timm

    from causalvis.config import FeatureVisConfig
    from causalvis.featurevis.maco import natural_magnitude
    from causalvis.pipeline.featurevis_recipe import render_units

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                            patch_size=8, depth=2, embed_dim=32, num_heads=2)
    model = CausalvisModel("vit", net, (0.5,) * 3, (0.5,) * 3, input_size=32)
    cfg = FeatureVisConfig(size=40, crop=2, jitter=2, jitter_after=1, steps=6, n_images=1,
                           maco_steps=6, maco_canvas=64, diversity=0.0, lr=0.1)
    grey = probe_tensor(model, torch.full((1, 3, 32, 32), 0.5), ["blocks.1.mlp.fc1"])
    rng = np.random.default_rng(0)
    magnitude = natural_magnitude([rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)], 64)
    for method in ("synthetic", "synthetic-maco"):
        (unit,) = render_units(model, "blocks.1.mlp.fc1", [(5, 0)], cfg, method=method,
                               magnitude=magnitude)
        acts = probe_tensor(model, unit.images, ["blocks.1.mlp.fc1"])["blocks.1.mlp.fc1"]
        assert unit.images.shape == (1, 3, 32, 32)
        assert float(acts[0, 5]) == pytest.approx(unit.objective[0], rel=1e-3, abs=1e-4)
        assert float(acts[0, 5]) > float(grey["blocks.1.mlp.fc1"][0, 5]), method


def test_init_stores_a_python_factory_file_as_an_absolute_path(tmp_path, monkeypatch):
    from causalvis.pipeline.build import init_study

    (tmp_path / "mynet.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    cfg = init_study(tmp_path / "study", "quick", model="python:mynet.py:make")
    assert cfg.model.name == f"python:{tmp_path.resolve() / 'mynet.py'}:make"
