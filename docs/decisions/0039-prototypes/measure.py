"""Start-up time and orphan behaviour: SeaweedS3 vs the mirakuru prototype (decision 0039).

Run from the repository root: `pip install mirakuru`, then
`PYTHONPATH=src python docs/decisions/0039-prototypes/measure.py 6`.
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from atlas.testing.seaweed import SeaweedS3
from mira_seaweed import MiraSeaweedS3

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5
out = {}
starts = {"SeaweedS3": [], "MiraSeaweedS3": []}
for i in range(N):  # alternate the order so machine load hits both alike
    for cls in (SeaweedS3, MiraSeaweedS3) if i % 2 == 0 else (MiraSeaweedS3, SeaweedS3):
        with tempfile.TemporaryDirectory() as d:
            s = cls(d, buckets=["atlas", "atlas-empty"], name=f"m{i}")
            t0 = time.perf_counter(); s.start(); starts[cls.__name__].append(round(time.perf_counter() - t0, 2))
            pids = list(s.pids)
            s.stop()
            assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)
for name, values in starts.items():
    out[name] = {"start_median_s": statistics.median(values), "start_all": values}

# orphans: a child starts a server, then (a) exits without stop, (b) is SIGKILLed
CHILD = """
import sys, json, time
sys.path.insert(0, sys.argv[4])
from atlas.testing.seaweed import SeaweedS3
from mira_seaweed import MiraSeaweedS3
cls = {"SeaweedS3": SeaweedS3, "MiraSeaweedS3": MiraSeaweedS3}[sys.argv[1]]
s = cls(sys.argv[2], buckets=["atlas"]).start()
print(json.dumps(s.pids), flush=True)
if sys.argv[3] == "wait":
    time.sleep(600)
"""
def alive(pids):
    res = []
    for p in pids:
        try:
            if psutil.Process(p).status() != "zombie":
                res.append(p)
        except psutil.NoSuchProcess:
            pass
    return res

for name in ("SeaweedS3", "MiraSeaweedS3"):
    for mode in ("exit", "sigkill"):
        with tempfile.TemporaryDirectory() as d:
            child = subprocess.Popen([sys.executable, "-c", CHILD, name, d, "wait" if mode == "sigkill" else "exit", str(Path(__file__).resolve().parent)],
                                     stdout=subprocess.PIPE, text=True, env=os.environ)
            pids = json.loads(child.stdout.readline())
            if mode == "sigkill":
                child.send_signal(signal.SIGKILL)
            child.wait(60)
            time.sleep(2.0)
            left = alive(pids)
            out[f"{name} after parent {mode}"] = {"server_pids": pids, "still_running": left}
            for p in left:
                os.killpg(p, signal.SIGKILL)
print(json.dumps(out, indent=1))
