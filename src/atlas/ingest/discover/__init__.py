"""Discovery: every DICOM object (and NIfTI file) in what an operator points ingest at.

- :mod:`~atlas.ingest.discover.sources`: expanding folders, zip archives and DICOMDIR files
  into the objects to examine;
- :mod:`~atlas.ingest.discover.instances`: one object's header read, checked and turned into
  an :class:`~atlas.ingest.model.InstanceInfo` or a quarantine reason;
- :mod:`~atlas.ingest.discover.grouping`: instances grouped into series;
- :mod:`~atlas.ingest.discover.discovery`: :func:`discover`, which runs the three.
"""

from atlas.ingest.discover.discovery import Discovery, discover
from atlas.ingest.discover.instances import SEGMENTATION_MODALITIES
from atlas.ingest.discover.sources import is_nifti_name

__all__ = ["SEGMENTATION_MODALITIES", "Discovery", "discover", "is_nifti_name"]
