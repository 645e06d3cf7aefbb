"""JPEG decoding on the GPU (nvjpeg via ``torchvision.io.decode_jpeg``) for CUDA scans.

On a GPU the forward pass is so fast that libjpeg + PIL resizing on a few CPU threads
bounds a scan; nvjpeg decodes a whole batch on the device. CPU threads only read the
file bytes (bounded look-ahead: one batch ahead, constant memory); the batch is decoded,
resized and centre-cropped on the GPU with the geometry of :func:`prepare_image`
(short side to ``size / crop_pct``, bilinear with antialiasing, centre crop) and rounded
to uint8 as PIL would.

**Not bit-identical to the CPU path**: nvjpeg's IDCT and chroma upsampling differ slightly
from libjpeg's, and torch's antialiased bilinear resize from PIL's, so pixels differ by a
few levels (``benchmarks/gpu_suite.py`` checks the scan activations agree within its
tolerance). It is chosen only where it can apply (:func:`gpu_decode_reason`): a CUDA
device, a folder source whose images are all JPEGs, and torchvision's GPU decoder. A batch
nvjpeg rejects (a corrupt or CMYK file) is decoded on the CPU path instead, which skips
and records unreadable files exactly as :meth:`ImageSource.iter_images` does.
"""

from __future__ import annotations

import inspect
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from causalvis.errors import CorruptImageError
from causalvis.images.sources import FolderSource, ImageSource, SkippedImage

JPEG_SUFFIXES = (".jpg", ".jpeg")
DECODE_MODES = ("auto", "cpu", "gpu")


def gpu_decode_reason(source: ImageSource, device: torch.device | str, ids: list[str],
                      decode: str = "auto") -> str | None:  # fmt: skip
    """``None`` when ``ids`` of ``source`` should be decoded on the GPU, else why not.

    ``decode``: ``"cpu"`` never, ``"auto"`` / ``"gpu"`` when the device is CUDA, the source
    is a folder, every id is a JPEG and torchvision can decode on the device."""
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, not {decode!r}")
    if decode == "cpu":
        return "decode = cpu"
    if torch.device(device).type != "cuda":
        return "not a CUDA device"
    if not isinstance(source, FolderSource):
        return "not a folder source"
    if not ids or not all(i.lower().endswith(JPEG_SUFFIXES) for i in ids):
        return "not all images are JPEGs"
    if not _torchvision_gpu_decoder():
        return "torchvision has no GPU JPEG decoder"
    return None


def _decoder():
    """torchvision's ``(decode_jpeg, ImageReadMode)``; its deprecation notice (0.29: the
    decoders move to TorchCodec) silenced, the functions still work."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg
    return decode_jpeg, ImageReadMode


def _torchvision_gpu_decoder() -> bool:
    try:
        decode_jpeg, _ = _decoder()
    except ImportError:
        return False
    return "device" in inspect.signature(decode_jpeg).parameters


def _read_bytes(source: FolderSource, image_id: str) -> tuple[str, torch.Tensor | None]:
    try:
        data = source.path(image_id).read_bytes()
    except OSError:
        return image_id, None
    return image_id, torch.frombuffer(bytearray(data), dtype=torch.uint8)


def resize_crop_gpu(images: list[torch.Tensor], size: int, crop_pct: float) -> torch.Tensor:
    """uint8 ``[3, H, W]`` images (one device) -> uint8 ``[N, 3, size, size]``: the geometry
    of :func:`prepare_image`, batched over images of one shape."""
    from causalvis.images.preprocess import resize_shape

    out = torch.empty((len(images), 3, size, size), dtype=torch.uint8,
                      device=images[0].device)  # fmt: skip
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape[1:]), []).append(k)
    for (h, w), idx in by_shape.items():
        x = torch.stack([images[k] for k in idx])
        if (h, w) != (size, size):
            new_w, new_h = resize_shape(w, h, size, crop_pct)
            x = torch.nn.functional.interpolate(
                x.float(), size=(new_h, new_w), mode="bilinear", align_corners=False,
                antialias=True,
            ).round_().clamp_(0, 255).to(torch.uint8)
            left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
            x = x[:, :, top : top + size, left : left + size]
        out[idx] = x
    return out


def iter_gpu_batches(
    source: FolderSource, ids: list[str], batch_size: int, device: torch.device,
    workers: int = 2,
) -> Iterator[tuple[list[str], torch.Tensor]]:  # fmt: skip
    """Yield ``(ids, float [B, 3, S, S] in [0, 1] on device)``, skipping (and recording in
    ``source.skipped``) unreadable files; file bytes are read one batch ahead."""
    decode_jpeg, ImageReadMode = _decoder()  # noqa: N806 - torchvision's enum
    batches = deque(ids[s : s + batch_size] for s in range(0, len(ids), batch_size))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def submit(batch: list[str]):
            return [pool.submit(_read_bytes, source, i) for i in batch]

        ahead = submit(batches.popleft()) if batches else None
        while ahead is not None:
            current = [f.result() for f in ahead]
            ahead = submit(batches.popleft()) if batches else None
            names = [i for i, data in current if data is not None]
            for i, data in current:
                if data is None:
                    source.skipped.append(SkippedImage(i, f"{source.path(i)}: file not found"))
            if not names:
                continue
            try:
                with warnings.catch_warnings():  # torchvision 0.29's per-call deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    decoded = decode_jpeg([d for _, d in current if d is not None],
                                          mode=ImageReadMode.RGB, device=device)  # fmt: skip
                u8 = resize_crop_gpu(decoded, source.size, source.crop_pct)
            except RuntimeError:  # nvjpeg rejects the batch: the CPU path, file by file
                names, u8 = _cpu_batch(source, names, device)
                if not names:
                    continue
            yield names, u8.float().div_(255.0)


def _cpu_batch(source: ImageSource, ids: list[str],
               device: torch.device) -> tuple[list[str], torch.Tensor]:  # fmt: skip
    names, arrays = [], []
    for image_id in ids:
        try:
            arrays.append(source.load_array(image_id))
            names.append(image_id)
        except CorruptImageError as exc:
            source.skipped.append(SkippedImage(image_id, str(exc)))
        except Exception as exc:  # noqa: BLE001 - never crash a scan on one file
            source.skipped.append(SkippedImage(image_id, f"{image_id}: {type(exc).__name__}: {exc}"))
    if not arrays:
        return [], torch.empty(0)
    u8 = torch.from_numpy(np.stack(arrays)).to(device).permute(0, 3, 1, 2)
    return names, u8
