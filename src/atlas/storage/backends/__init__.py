"""One module per kind of store: local directories, ``memory://`` and S3.

They are imported on first use through :mod:`atlas.storage.registry`, never at import of
:mod:`atlas.storage`.
"""

__all__: list[str] = []
