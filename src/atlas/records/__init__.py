"""What ingest hands to the index: the bookkeeping objects both read and write on a store.

Ingest writes these objects and the index reads (and erasure deletes) them, so they sit below
both packages and neither imports the other:

- staging tables (this package's top-level names, from :mod:`atlas.records.staging`): one
  Parquet object per series and table under ``_staging/``;
- :mod:`atlas.records.journal`: one entry per finished series under ``_journal/``, which makes
  ingest resumable;
- :mod:`atlas.records.ownership`: the site a store belongs to (``_site.json``) and the
  collection of each series.

Every object holds pseudonymous ids, de-identified values and names only.
"""

from atlas.records.staging import (
    RECORD_VERSION,
    STAGING_PREFIX,
    TABLES,
    annotation_rows,
    read_table,
    schemas,
    staging_key,
    write_table,
)

__all__ = [
    "RECORD_VERSION",
    "STAGING_PREFIX",
    "TABLES",
    "annotation_rows",
    "read_table",
    "schemas",
    "staging_key",
    "write_table",
]
