"""SIGKILL in the middle of a write: readers never see a complete-looking image."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from atlas.errors import IncompleteImage
from atlas.ome import find_incomplete, open_image, write_image
from atlas.storage import open_store

WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from atlas.ome import Layout, write_image
    from atlas.storage import LatencyConfig, open_store

    store = open_store(sys.argv[1], latency=LatencyConfig(base=0.02))
    data = np.arange(32 * 128 * 128, dtype="int16").reshape(32, 128, 128)
    write_image(store, "case/ct.ome.zarr", data, spacing=(1, 1, 1),
                layout=Layout(chunks=(4, 32, 32), shards=(4, 32, 32)))
    print("finished")
    """
)


@pytest.mark.slow
def test_sigkill_mid_write_leaves_no_complete_looking_image(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)])
    level0 = tmp_path / "case" / "ct.ome.zarr" / "0" / "c"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if level0.exists() and sum(len(f) for _, _, f in os.walk(level0)) >= 8:
            break
        time.sleep(0.02)
    else:  # pragma: no cover - the writer never got going
        proc.kill()
        pytest.fail("writer did not start writing shards")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    store = open_store(tmp_path)
    with pytest.raises(IncompleteImage, match="interrupted"):
        open_image(store, "case/ct.ome.zarr")
    assert find_incomplete(store) == ["case/ct.ome.zarr"]
    # running the same write again completes it, replacing the leftovers
    data = np.arange(32 * 128 * 128, dtype="int16").reshape(32, 128, 128)
    write_image(store, "case/ct.ome.zarr", data, spacing=(1, 1, 1))
    np.testing.assert_array_equal(open_image(store, "case/ct.ome.zarr").read(0), data)
    assert find_incomplete(store) == []
