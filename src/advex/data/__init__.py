"""Data: images in and out, class names."""

from advex.data.classes import imagenet_classes, resolve_class
from advex.data.images import LoadedImage, load_image, load_images, pack, quantize, sample_photos, save_png, unpack
from advex.data.patchfile import LoadedPatch, load_patch, save_patch

__all__ = [
    "LoadedImage",
    "LoadedPatch",
    "imagenet_classes",
    "load_image",
    "load_images",
    "load_patch",
    "pack",
    "quantize",
    "resolve_class",
    "sample_photos",
    "save_patch",
    "save_png",
    "unpack",
]
