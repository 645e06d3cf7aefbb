"""The single preprocessing path: PIL image -> model-size uint8 RGB -> [0, 1] tensor.

Default = Resize(short side to size / crop_pct, bilinear) + CenterCrop(size), the
paper's Resize 256 + CenterCrop 224. An image that already has the model's input size
is fed unchanged, so stimuli saved losslessly at that size reproduce their activations
exactly when probed again.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from causalvis.errors import CorruptImageError


def load_image_file(path: str | Path) -> Image.Image:
    """Decode an image file to RGB, or raise :class:`CorruptImageError` saying why."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                img.load()
                if img.mode == "RGBA" or img.mode == "LA" or "transparency" in img.info:
                    img = img.convert("RGBA")
                    background = Image.new("RGBA", img.size, (255, 255, 255, 255))
                    img = Image.alpha_composite(background, img)
                return img.convert("RGB")
    except FileNotFoundError as exc:
        raise CorruptImageError(f"{path}: file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{path}: cannot decode image ({exc})") from exc
    except Image.DecompressionBombError as exc:
        raise CorruptImageError(f"{path}: image too large ({exc})") from exc


def prepare_image(img: Image.Image, size: int, crop_pct: float = 0.875) -> Image.Image:
    """Resize + centre crop to ``size`` x ``size`` RGB (unchanged if already that size)."""
    img = img.convert("RGB")
    if img.size == (size, size):
        return img
    new_w, new_h = resize_shape(*img.size, size, crop_pct)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def resize_shape(w: int, h: int, size: int, crop_pct: float = 0.875) -> tuple[int, int]:
    """``(width, height)`` after the resize of :func:`prepare_image` (short side to
    ``size / crop_pct``); shared with the GPU decoder so both crop the same region."""
    resize = int(round(size / crop_pct))
    if w <= h:
        return resize, max(resize, int(resize * h / w))
    return max(resize, int(resize * w / h)), resize


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image -> float tensor [3, H, W] in [0, 1] (exact: x / 255)."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """[3, H, W] tensor in [0, 1] -> uint8 RGB image (rounded, clipped)."""
    arr = x.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, mode="RGB")


def uint8_to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 array [H, W, 3] or [N, H, W, 3] -> float tensor in [0, 1], channels first."""
    t = torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)
    return t.permute(2, 0, 1) if t.dim() == 3 else t.permute(0, 3, 1, 2)
