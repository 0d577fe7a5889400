"""Smoke test of the service image: run it, probe it, score rows, stop it.

    .venv/bin/python deploy/smoke_test.py [--image localhost/vae-service:latest] [--model vae:latest]

Runs the image with podman (read-only root filesystem, as the Deployment does), waits for
/readyz, checks /livez and /metadata, compares one /anomaly_score answer with the runtime
computed here, outside the container, for the same rows and seed (they must be equal to the
bit), then sends SIGTERM and checks a clean exit within the grace period. Prints one line
per check; exits non-zero on the first failure.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.readiness import wait_ready  # noqa: E402
from serving.store import load_runtime  # noqa: E402


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTAINERS_CONF": os.environ.get(
        "CONTAINERS_CONF", str(ROOT / "deploy" / "containers.conf"))}
    runtime = ["--runtime", "runc"] if subprocess.run(["which", "runc"], capture_output=True
                                                      ).returncode == 0 else []
    return subprocess.run(["podman", *runtime, *args], capture_output=True, text=True, env=env,
                          check=check)


def ok(message: str) -> None:
    print(f"ok    {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="localhost/vae-service:latest")
    parser.add_argument("--model", default="vae:latest", help="the model baked in, for reference")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--grace", type=float, default=30.0, help="seconds allowed to stop")
    args = parser.parse_args()
    name = f"vae-smoke-{os.getpid()}"
    url = f"http://127.0.0.1:{args.port}"
    # as deploy/kubernetes/deployment.yaml runs it: read-only root, writable /tmp as BentoML's home
    podman("run", "-d", "--name", name, "--network=host", "--read-only", "--tmpfs",
           "/tmp:mode=1777", "-e", "TMPDIR=/tmp", "-e", "BENTOML_HOME=/tmp/bentoml",
           "-e", "VAE_WORKERS=1", args.image, "--port", str(args.port))
    try:
        try:
            wait_ready(url, what=f"the container {name}")
        except RuntimeError as e:
            print(podman("logs", name, check=False).stderr[-2000:])
            raise SystemExit(f"FAIL  {e}") from None
        ok("/readyz 200")
        assert httpx.get(f"{url}/livez").status_code == 200, "FAIL  /livez"
        ok("/livez 200")
        runtime = load_runtime(args.model)
        meta = httpx.get(f"{url}/metadata").json()
        assert meta["version"] == runtime.version, f"FAIL  /metadata version {meta['version']}"
        ok(f"/metadata version {meta['version']} = the model outside")
        from sklearn.datasets import load_digits
        x = load_digits().data[:50].astype(np.float32)
        answer = httpx.post(f"{url}/anomaly_score", timeout=60,
                            json={"x": x.tolist(), "n_samples": 16, "seed": 7}).json()
        expected = runtime.score(x, runtime.noise(7, 16))
        assert answer["score"] == expected.score.tolist(), "FAIL  /anomaly_score differs"
        ok(f"/anomaly_score of 50 rows = the runtime outside, bit for bit "
           f"(first score {answer['score'][0]:.4f})")
        started = time.monotonic()
        podman("stop", "-t", str(int(args.grace)), name)
        seconds = time.monotonic() - started
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0" and seconds < args.grace, f"FAIL  exit {code} after {seconds:.1f} s"
        ok(f"SIGTERM: exit 0 after {seconds:.1f} s (grace {args.grace:.0f} s)")
    except AssertionError as e:
        print(e)
        return 1
    finally:
        podman("rm", "-f", name, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
