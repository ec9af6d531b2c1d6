"""OME-Zarr v0.5 images: sharded multiscale writer, typed reader, labels."""

from atlas.ome.layout import Layout
from atlas.ome.metadata import CT_WINDOWS, ImageMetadata, LabelInfo, LevelInfo, WindowPreset
from atlas.ome.reader import OmeImage, OmeLabel, find_incomplete, open_image
from atlas.ome.writer import LabelSpec, write_image

__all__ = [
    "CT_WINDOWS",
    "ImageMetadata",
    "LabelInfo",
    "LabelSpec",
    "Layout",
    "LevelInfo",
    "OmeImage",
    "OmeLabel",
    "WindowPreset",
    "find_incomplete",
    "open_image",
    "write_image",
]
