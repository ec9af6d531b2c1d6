"""DICOM helpers with no ingest concepts.

Functional groups, raw header values, pixel data lengths and geometry attribute checks. This
package sits below ingest (it imports only :mod:`atlas.errors`, pydicom and numpy): it
reads DICOM data sets, it never decides what to do with them.
"""

from atlas.dicom.functional_groups import (
    functional_group_item,
    functional_group_items,
    is_enhanced,
)
from atlas.dicom.geometry_values import geometry_problem, orientation_problem, vector_problem
from atlas.dicom.pixel_data import check_pixel_data, declared_image_bytes
from atlas.dicom.raw_header import RawHeader

__all__ = [
    "RawHeader",
    "check_pixel_data",
    "declared_image_bytes",
    "functional_group_item",
    "functional_group_items",
    "geometry_problem",
    "is_enhanced",
    "orientation_problem",
    "vector_problem",
]
