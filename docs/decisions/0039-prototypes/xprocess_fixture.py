"""The pytest-xprocess prototype of the `seaweed` fixture (decision 0039).

`pip install pytest-xprocess`, then from the repository root:
`PYTHONPATH=src XP_OUT=xp.json XP_TERMINATE=1 python -m pytest docs/decisions/0039-prototypes/xprocess_fixture.py`
(`XP_TERMINATE=0` leaves the server running after the session; `XP_SLEEP=1` keeps the test
running so the pytest process can be killed with SIGKILL).
"""
import json, os, time
import pytest
from xprocess import ProcessStarter
from atlas.testing.seaweed import SeaweedS3

@pytest.fixture(scope="session")
def xp_seaweed(xprocess, tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("xp"), buckets=["atlas", "atlas-empty"], name="xp")
    from atlas.testing.seaweed.binary import _child_env, find_weed
    from atlas.testing.seaweed.credentials import _write_s3_config
    server._weed = find_weed(); server.workdir.mkdir(parents=True, exist_ok=True)
    _write_s3_config(server.s3_config_path, server.admin, server.readonly)
    server.ports = server._allocate_ports()
    captured = []
    server._spawn = lambda name, args, grace=8.0: captured.append(args)
    server._wait_for_s3 = lambda deadline: None
    server._launch(0.0)
    client = server.s3_client(timeout=2.0)

    class Starter(ProcessStarter):
        args = [server._weed, *captured[0]]
        env = _child_env(server.workdir)
        timeout = 30
        terminate_on_interrupt = True
        def startup_check(self):
            try:
                have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
                for b in server.buckets:
                    if b not in have:
                        client.create_bucket(Bucket=b)
                return set(server.buckets) <= have
            except Exception:
                return False

    t0 = time.perf_counter()
    pid, log = xprocess.ensure("weed-xp", Starter, restart=True)
    elapsed = time.perf_counter() - t0
    with open(os.environ["XP_OUT"], "w") as fh:
        json.dump({"pid": pid, "start_s": elapsed}, fh)
    yield server
    if os.environ.get("XP_TERMINATE") == "1":
        xprocess.getinfo("weed-xp").terminate()

def test_up(xp_seaweed):
    if os.environ.get("XP_SLEEP"):
        time.sleep(600)
