"""HTTP load from `wrk` (Debian's C load generator, `apt-get install wrk`), which shares no
interpreter with the server, and the resident memory of a server's process tree."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
"""
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def require_wrk() -> None:
    """Exit in one line when wrk is missing, before any work that would need it."""
    if shutil.which("wrk") is None:
        sys.exit("wrk, the HTTP load generator, is missing: apt-get install wrk")


def wrk(url: str, body: bytes, connections: int, seconds: float) -> dict:
    """POST body to url from `connections` connections for `seconds`: requests/s, p50 and p99
    in ms, and the count of non-2xx answers and socket errors."""
    threads = 1 if connections < 16 else 2
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "body.json").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(SCRIPT)
        env = {**os.environ, "WRK_BODY": str(Path(tmp) / "body.json")}
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s",
                              "--timeout", "30s", "--latency", "-s", str(Path(tmp) / "post.lua"),
                              url], capture_output=True, text=True, env=env, check=True).stdout
    percentiles = {int(p): float(v) * UNITS[u] for p, v, u in
                   re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       out)
    return {"requests": int(done.group(1)),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": percentiles[50], "p99_ms": percentiles[99],
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": sum(map(int, errors.groups())) if errors else 0}


def tree_rss_mb(process) -> dict[int, float]:
    """Resident memory (MB) of a server and each of its children, by pid."""
    import psutil

    root = psutil.Process(process.pid)
    found = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            found[p.pid] = p.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
    return found
