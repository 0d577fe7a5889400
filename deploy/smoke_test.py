"""Smoke test of the service image: its size, the image run alone, the Kubernetes manifests run
with `podman kube play`, and the API page in headless Chromium.

    .venv/bin/python deploy/smoke_test.py [--image localhost/vae-service:latest] [--out smoke/]

1. The image is at most MAX_IMAGE_MB, and names its model (VAE_MODEL, baked by deploy/image.sh).
2. `podman run` as the Deployment runs it (read-only root filesystem, /tmp writable, nothing
   else set): /readyz, /livez, /metadata's version = the model's outside the container, one
   /anomaly_score answer equal to the runtime's here to the bit; before it stops, headless
   Chromium (Debian's `chromium`) opens its `/`: every endpoint is listed, the page's own
   request to /docs.json was answered 200, and a screenshot goes to OUT/api-page.png; then
   SIGTERM and a clean exit.
3. job.yaml's command (`vae score`, the image's own model) over a volume at /data: its scores
   equal the runtime's here.
4. deploy/kubernetes rendered by kustomize (`kubectl kustomize`); its ConfigMap, Deployment and
   Service go to `podman kube play` (podman 4.3 plays Pods, Deployments, ConfigMaps and PVCs;
   the Service is passed along and ignored; one replica, since each pod publishes its port on
   this host). The pod must run as the manifest says (user 1034, read-only root, /tmp
   writable, its CPU and memory limits); each probe of the Deployment is requested as the
   kubelet would (podman turns only the liveness probe into a healthcheck, which runs curl:
   not in the image); a row is scored; `podman kube down` removes everything.
Prints one line per check; exits non-zero on the first failure.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.readiness import wait_ready  # noqa: E402
from deploy.api_page import docs_json_answered, documented, load_page, unlisted  # noqa: E402
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


MAX_IMAGE_MB = 600


def image_model(image: str) -> str:
    env = podman("image", "inspect", image, "--format", "{{json .Config.Env}}").stdout
    for item in json.loads(env):
        if item.startswith("VAE_MODEL="):
            return item.split("=", 1)[1]
    raise SystemExit(f"FAIL  {image} sets no VAE_MODEL: build it with deploy/image.sh")


def check_image(image: str) -> str:
    size = int(podman("image", "inspect", image, "--format", "{{.Size}}").stdout) / 1e6
    assert size <= MAX_IMAGE_MB, f"FAIL  the image is {size:.0f} MB, over {MAX_IMAGE_MB} MB"
    model = image_model(image)
    ok(f"image {image}: {size:.0f} MB (at most {MAX_IMAGE_MB}), serving {model}")
    return model


def check_answers(url: str, runtime) -> None:
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


# as deploy/kubernetes/deployment.yaml runs it: read-only root, writable /tmp as BentoML's home
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:mode=1777", "-e", "BENTOML_HOME=/tmp/bentoml")


def ready(url: str, name: str) -> None:
    """The container `name` answers /readyz at url, or its log's tail and a FAIL line."""
    try:
        wait_ready(url, what=f"the container {name}")
    except RuntimeError as e:
        print(podman("logs", name, check=False).stderr[-2000:])
        raise SystemExit(f"FAIL  {e}") from None


def run_alone(args, runtime, out: Path) -> None:
    """The image with nothing set but the read-only root: the model is its own (no VAE_MODEL
    given). The API page is opened on it before it is stopped."""
    name = f"vae-smoke-{os.getpid()}"
    url = f"http://127.0.0.1:{args.port}"
    podman("run", "-d", "--name", name, "--network=host", *READ_ONLY, "-e", "TMPDIR=/tmp",
           "-e", "VAE_WORKERS=1", args.image, "--port", str(args.port))
    try:
        ready(url, name)
        ok("podman run: /readyz 200")
        assert httpx.get(f"{url}/livez").status_code == 200, "FAIL  /livez"
        ok("/livez 200")
        check_answers(url, runtime)
        api_page(name, url, out)
        started = time.monotonic()
        podman("stop", "-t", str(int(args.grace)), name)
        seconds = time.monotonic() - started
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip()
        assert code == "0" and seconds < args.grace, f"FAIL  exit {code} after {seconds:.1f} s"
        ok(f"SIGTERM: exit 0 after {seconds:.1f} s (grace {args.grace:.0f} s)")
    finally:
        podman("rm", "-f", name, check=False)


def run_job(args, runtime, out: Path) -> None:
    """deploy/kubernetes/job.yaml's command, in the image, over a volume at /data: `vae score`
    with the image's own model (its VAE_MODEL), equal to the runtime's answer here."""
    import pyarrow as pa
    from pyarrow import parquet
    from sklearn.datasets import load_digits
    job = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "job.yaml").read_text())
    [container] = job["spec"]["template"]["spec"]["containers"]
    data = (out / "job-data").resolve()
    shutil.rmtree(data, ignore_errors=True)
    for sub in ("input", "output"):
        (data / sub).mkdir(parents=True)
        os.chmod(data / sub, 0o777)
    frame = load_digits(as_frame=True).data.iloc[:300].astype("float32")
    frame.to_parquet(data / "input" / "rows.parquet")
    done = podman("run", "--rm", *READ_ONLY, "-v", f"{data}:/data", "--workdir",
                  container["workingDir"], "--entrypoint", container["command"][0], args.image,
                  *container["command"][1:], *container["args"], check=False)
    assert done.returncode == 0, f"FAIL  the Job's command: {done.stderr[-1500:]}"
    scores = parquet.read_table(data / "output" / "scores.parquet")
    seed = int(container["args"][container["args"].index("--seed") + 1])
    expected = runtime.score(frame.to_numpy(), runtime.noise(seed, 16))
    assert scores["score"].to_pylist() == pa.array(expected.score).to_pylist(), \
        "FAIL  the Job's scores differ from the runtime's outside"
    ok(f"job.yaml's command in the image: {done.stdout.strip()}; = the runtime outside")


def played_manifests(image: str, out: Path) -> tuple[Path, dict]:
    """deploy/kubernetes rendered by kustomize, cut to what `podman kube play` runs here."""
    rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / "deploy" / "kubernetes")],
                              capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered)
            if d and d["kind"] in ("ConfigMap", "Deployment", "Service")]
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
    path = out / "kube-play.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path, deployment


def run_manifests(args, runtime, out: Path) -> None:
    path, deployment = played_manifests(args.image, out)
    spec = deployment["spec"]["template"]["spec"]
    [container] = spec["containers"]
    port = container["ports"][0]["containerPort"]
    url = f"http://127.0.0.1:{port}"
    played = podman("kube", "play", str(path), check=False)
    try:
        assert played.returncode == 0, f"FAIL  podman kube play: {played.stderr[-1500:]}"
        name = f"{deployment['metadata']['name']}-pod-0-{container['name']}"
        ready(url, name)
        ok(f"podman kube play of the rendered ConfigMap, Deployment and Service: {name} ready")
        inspect = json.loads(podman("inspect", name).stdout)[0]
        host, limits = inspect["HostConfig"], container["resources"]["limits"]
        security = spec["securityContext"]
        assert host["ReadonlyRootfs"], "FAIL  the root filesystem is writable"
        assert inspect["Config"]["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
        assert host["Memory"] == 2 * 1024**3 and limits["memory"] == "2Gi", host["Memory"]
        assert host["NanoCpus"] == int(float(limits["cpu"]) * 1e9), host["NanoCpus"]
        denied = podman("exec", name, "python3", "-c", "open('/written', 'w')", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert podman("exec", name, "python3", "-c", "open('/tmp/written', 'w')",
                      check=False).returncode == 0, "FAIL  /tmp is not writable"
        ok(f"runs as {inspect['Config']['User']}, read-only root (/tmp writable), "
           f"{limits['cpu']} CPUs and {limits['memory']} as limited")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]["httpGet"]
            answer = httpx.get(f"{url}{probe['path']}", timeout=5)
            assert answer.status_code == 200, f"FAIL  {kind} {probe['path']}: {answer.text}"
            ok(f"{kind}: GET {probe['path']} on port {probe['port']} -> 200 {answer.text}")
        check_answers(url, runtime)
    finally:
        podman("kube", "down", str(path), check=False)
        left = podman("pod", "ps", "-q", "--filter", "name=vae-service", check=False).stdout
        assert not left.strip(), f"FAIL  pods left after kube down: {left}"
    ok("podman kube down: nothing left")


def api_page(name: str, url: str, out: Path) -> None:
    """`/` of the running container `name` in headless Chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        ok("SKIP  the API page: Debian's chromium is not installed (apt-get install chromium)")
        return
    dom = load_page(chromium, f"{url}/", out / "api-page.png")
    logs = podman("logs", name, check=False)
    assert docs_json_answered(logs.stdout + logs.stderr), \
        "FAIL  the page's request to /docs.json was not answered 200"
    paths, without_example = documented(url)
    assert not unlisted(dom, paths), f"FAIL  the API page does not list {unlisted(dom, paths)}"
    assert not without_example, f"FAIL  no example for {without_example}"
    ok(f"headless Chromium: / lists all {len(paths)} endpoints, with their examples; its "
       f"/docs.json request answered 200; screenshot {out / 'api-page.png'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="localhost/vae-service:latest")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--grace", type=float, default=30.0, help="seconds allowed to stop")
    parser.add_argument("--out", default="smoke", help="where the screenshot and the played "
                        "manifests go (smoke)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model = check_image(args.image)
        runtime = load_runtime(model)
        run_alone(args, runtime, out)
        run_job(args, runtime, out)
        run_manifests(args, runtime, out)
    except (AssertionError, subprocess.CalledProcessError) as e:
        print(e if isinstance(e, AssertionError) else f"FAIL  {e}: {e.stderr[-1500:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
