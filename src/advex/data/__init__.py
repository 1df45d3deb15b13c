"""Data: images in and out, class names, whole datasets in memory (MNIST, CIFAR-10, image
folders) and their training-time augmentation."""

from advex.data.augment import augment_crop_flip
from advex.data.classes import imagenet_classes, resolve_class
from advex.data.datasets import DATASETS, ArrayDataset, load_dataset
from advex.data.images import (
    LoadedImage,
    atomic_write_bytes,
    load_image,
    load_images,
    pack,
    quantize,
    sample_photos,
    save_png,
    unpack,
)
from advex.data.patchfile import LoadedPatch, load_patch, save_patch

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "LoadedImage",
    "LoadedPatch",
    "atomic_write_bytes",
    "augment_crop_flip",
    "imagenet_classes",
    "load_dataset",
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
