"""Image sources (folders, embedded samples) and the one preprocessing path."""

from causalvis.images.groups import ImageGroups, source_groups
from causalvis.images.preprocess import load_image_file, pil_to_tensor, prepare_image, tensor_to_pil
from causalvis.images.sources import (
    FolderSource,
    ImageSource,
    SampleSource,
    SkippedImage,
    open_source,
)

__all__ = [
    "FolderSource",
    "ImageGroups",
    "ImageSource",
    "SampleSource",
    "SkippedImage",
    "load_image_file",
    "open_source",
    "pil_to_tensor",
    "prepare_image",
    "source_groups",
    "tensor_to_pil",
]
