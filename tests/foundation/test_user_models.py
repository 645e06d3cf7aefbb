"""Own models as a new user brings them (issue 18, #7-#11): no crash, no silently wrong
tensor, one ``error:`` line for every weights or device mistake."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causalvis.cli import main
from causalvis.models import ActivationProbe, CausalvisModel, load_model


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error(capsys, *args: str) -> str:
    code, _, err = _cli(capsys, *args)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(load_model("timm:resnet18", weights="random").net.state_dict(), path)
    return path


# -- #7: nested probes compose --------------------------------------------------------
def test_nested_probes_on_one_layer_both_record(lite0):
    x = torch.rand(2, 3, 224, 224)
    with ActivationProbe(lite0, ["blocks.2.1"]) as outer:
        with ActivationProbe(lite0, ["blocks.2.1", "blocks.3.0"]) as inner:
            got = inner(x)
        again = outer(x)
    torch.testing.assert_close(got["blocks.2.1"], again["blocks.2.1"])
    assert got["blocks.3.0"].shape == (2, 80)


# -- #8: init --weights ----------------------------------------------------------------
def test_init_with_weights_offline(tmp_path, capsys):
    weights = tmp_path / "googlenet.pth"
    torch.save(load_model("torchvision:googlenet", weights="random").net.state_dict(), weights)
    study = tmp_path / "study"
    code, out, err = _cli(
        capsys, "init", str(study), "--model", "torchvision:googlenet", "--weights", str(weights)
    )
    assert code == 0, err
    from causalvis.config import StudyConfig

    cfg = StudyConfig.load(study)
    assert cfg.model.name == "torchvision:googlenet"
    assert cfg.model.weights == str(weights.resolve())


def test_init_validates_weights(tmp_path, capsys, r18_file):
    line = _one_error(capsys, "init", str(tmp_path / "s"), "--model", "torchvision:googlenet",
                      "--weights", str(r18_file))
    assert "do not fit" in line
    assert not (tmp_path / "s" / "study.toml").exists()
    line = _one_error(capsys, "init", str(tmp_path / "s"), "--weights", str(tmp_path / "no.pth"))
    assert "not found" in line


# -- #10: weights and device mistakes are one line -----------------------------------
def test_weights_mistakes_are_one_error_line(tmp_path, capsys, r18_file):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    pickled = tmp_path / "module.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), pickled)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"junk")
    cases = [
        (["layers", "timm:resnet34", "--weights", str(r18_file)], "do not fit"),
        (["layers", "torchvision:googlenet", "--weights", str(r18_file)], "do not fit"),
        (["layers", "timm:resnet18", "--weights", str(garbage)], "not a readable"),
        (["layers", "timm:resnet18", "--weights", str(pickled)], "pickled object"),
        (["layers", "timm:resnet18", "--weights", str(bad_st)], "safetensors"),
    ]
    for args, message in cases:
        assert message in _one_error(capsys, *args), args


def test_device_mistakes_are_one_error_line(tmp_path, capsys, samples):
    image = tmp_path / "x.png"
    samples.load(samples.ids[0]).save(image)
    probe = ["probe", "lite0", str(image), "--unit", "blocks.3.2:1", "--device"]
    assert "unknown device 'tpu'" in _one_error(capsys, *probe, "tpu")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in _one_error(capsys, *probe, "cuda")
    else:
        count = torch.cuda.device_count()
        assert "CUDA GPU(s)" in _one_error(capsys, *probe, f"cuda:{count}")


# -- #11a: maps are not overwritten by an in-place op --------------------------------
class _BnRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


def test_map_probe_keeps_pre_relu_bn_map_with_inplace_relu():
    net = CausalvisModel("bnrelu", _BnRelu(), (0.5,) * 3, (0.5,) * 3, input_size=16)
    x = torch.rand(2, 3, 16, 16)
    with torch.inference_mode():
        expected = net.net.bn1(net.net.conv1((x - 0.5) / 0.5))
    assert (expected < 0).any()
    for grad in (False, True):
        with ActivationProbe(net, ["bn1", "bn2"], mode="map", grad=grad) as probe:
            got = probe(x)
        torch.testing.assert_close(got["bn1"].detach(), expected)
        assert (got["bn1"] < 0).any(), "the BN map must be pre-ReLU"


# -- #9 / issue 20: channels-last tensors are read permuted, never misread -------------
def _timm_model(arch: str, size: int, **kwargs) -> CausalvisModel:
    import timm

    net = timm.create_model(arch, pretrained=False, **kwargs)
    return CausalvisModel(arch, net, (0.5,) * 3, (0.5,) * 3, input_size=size)


def test_channels_last_layers_are_marked_and_read_channels_first():
    from causalvis.models import list_layers, parse_unit

    # ConvNeXt-T's layout (conv_mlp=False: nn.LayerNorm over the last dim of NHWC) and a
    # tiny Swin, both at a small input
    convnext = _timm_model("convnext_atto", 64, conv_mlp=False)
    swin = _timm_model("swin_tiny_patch4_window7_224", 128, img_size=128, window_size=4,
                       embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    for model, layer, channels, side in [
        (convnext, "stages.1.blocks.0.norm", 80, 8),
        (swin, "layers.1.blocks.0.norm1", 48, 16),
    ]:
        info = {i.name: i for i in list_layers(model)}[layer]
        assert info.supported and info.layout == "nhwc" and "channels-last" in info.kind
        assert (info.channels, info.height, info.width) == (channels, side, side)
        assert parse_unit(f"{layer}:{channels - 1}", model) == (layer, channels - 1)
        with ActivationProbe(model, [layer], mode="map") as probe:
            got = probe.run(torch.rand(1, 3, model.input_size, model.input_size))[layer]
        assert got.shape == (1, channels, side, side)
    # channels-first models keep every layer: ConvNeXt-atto's LayerNorm2d, CNN blocks
    atto = _timm_model("convnext_atto", 64)
    assert all(i.supported and i.layout == "nchw" for i in list_layers(atto))
    norm = {i.name: i for i in list_layers(atto)}["stages.1.blocks.0.norm"]
    assert (norm.channels, norm.height) == (80, 8)
    tv = load_model("torchvision:googlenet", weights="random")
    assert all(i.supported and i.layout == "nchw" for i in list_layers(tv))


def test_layers_command_shows_channels_last_kind(capsys):
    code, out, err = _cli(capsys, "layers", "timm:convnext_tiny", "--weights", "random")
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("stages.0.blocks.0.norm "))
    assert "channels-last (norm)" in row and row.split()[-2:] == ["96", "56x56"]
