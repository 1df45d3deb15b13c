"""Data: images in and out, class names."""

from advex.data.classes import imagenet_classes, resolve_class
from advex.data.images import LoadedImage, load_image, load_images, pack, quantize, sample_photos, save_png, unpack

__all__ = [
    "LoadedImage",
    "imagenet_classes",
    "load_image",
    "load_images",
    "pack",
    "quantize",
    "resolve_class",
    "sample_photos",
    "save_png",
    "unpack",
]
