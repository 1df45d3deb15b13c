"""Data: images in and out (PNG/JPEG, 8-bit quantisation, atomic writes, mixed-size batches),
the standard datasets (MNIST, CIFAR-10) with their class names and their training-time
augmentation, ImageNet's class names and WordNet ids, labelled image folders and CSVs
streamed by background workers (``--data``), and patch files."""

from advex.data.augment import augment_crop_flip
from advex.data.classes import imagenet_classes, imagenet_synonyms, imagenet_wnids, resolve_class
from advex.data.datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    MNIST_CLASSES,
    STATS,
    ArrayDataset,
    load_dataset,
    parse_indices,
)
from advex.data.images import (
    MAX_MEGAPIXELS,
    LoadedImage,
    atomic_write_bytes,
    check_writable,
    find_images,
    image_size,
    load_image,
    load_images,
    pack,
    quantize,
    sample_photos,
    save_png,
    to_uint8,
    unpack,
)
from advex.data.patchfile import LoadedPatch, load_patch, save_patch
from advex.data.sources import Batch, ImageFiles, as_model_input, open_images, stream

__all__ = [
    "MAX_MEGAPIXELS",
    "CIFAR10_CLASSES",
    "DATASETS",
    "MNIST_CLASSES",
    "STATS",
    "ArrayDataset",
    "Batch",
    "ImageFiles",
    "LoadedImage",
    "LoadedPatch",
    "as_model_input",
    "atomic_write_bytes",
    "augment_crop_flip",
    "check_writable",
    "find_images",
    "image_size",
    "imagenet_classes",
    "imagenet_synonyms",
    "imagenet_wnids",
    "load_dataset",
    "load_image",
    "load_images",
    "load_patch",
    "open_images",
    "pack",
    "parse_indices",
    "quantize",
    "resolve_class",
    "sample_photos",
    "save_patch",
    "save_png",
    "stream",
    "to_uint8",
    "unpack",
]
