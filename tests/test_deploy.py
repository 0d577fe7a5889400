"""The Kubernetes manifests: valid against the schemas, and in agreement with the code."""

import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from vae_service.cli import parser
from serving.http.settings import Settings
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


def documents() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(DEPLOY.glob("*.yaml"))}


RAYJOBS = {"rayjob.yaml": "score", "rayjob-train.yaml": "train"}  # KubeRay's: no schema here


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [n for n in documents() if n != "kustomization.yaml"
                                  and n not in RAYJOBS])
def test_manifests_validate_strictly(name, version):
    kubernetes_validate.validate(documents()[name], version, strict=True)


def test_kustomization_lists_every_manifest():
    listed = documents()["kustomization.yaml"]["resources"]
    assert sorted(listed) == sorted(n for n in documents() if n != "kustomization.yaml")


def test_kustomize_builds_every_manifest():
    """`kubectl kustomize` (Debian's kubectl package) renders the whole directory offline."""
    import shutil
    import subprocess

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (apt-get install kubectl)")
    built = subprocess.run(["kubectl", "kustomize", str(DEPLOY)], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(built.stdout))
    assert kinds == sorted(documents()[n]["kind"] for n in documents()
                           if n != "kustomization.yaml")


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_runs_the_ray_the_project_installs(name):
    import ray

    cluster = documents()[name]["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in
                                                     cluster["workerGroupSpecs"]]
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"].startswith(f"rayproject/ray:{ray.__version__}")


@pytest.mark.parametrize("name", RAYJOBS)
def test_rayjob_structure(name):
    job = documents()[name]
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    first = spec["entrypoint"].split("&&")[0].split()
    args = parser().parse_args(first[first.index("vae_service.cli") + 1:])
    assert args.command == RAYJOBS[name] and args.engine == "ray"
    cluster = spec["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in
                                                     cluster["workerGroupSpecs"]]
    for pod in pods:
        [container] = pod["spec"]["containers"]
        assert container["image"].startswith("rayproject/ray:")
        assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
        assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "vae-data"
    assert re.search(r"\bonnxruntime\b", spec["runtimeEnvYAML"])


def _pod(name: str) -> dict:
    return documents()[name]["spec"]["template"]["spec"]


def test_deployment_agrees_with_the_service_code():
    pod = _pod("deployment.yaml")
    [container] = pod["containers"]
    image_default = re.search(r"TAG=\$\{1:-([^}]+)\}", (ROOT / "deploy" / "image.sh").read_text())
    assert container["image"] == image_default.group(1)
    assert container["ports"] == [{"name": "http", "containerPort": 3000}]
    assert container["args"] == ["--port", "3000"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    service = documents()["service.yaml"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    assert service["selector"] == documents()["deployment.yaml"]["spec"]["selector"]["matchLabels"]
    settings = documents()["configmap.yaml"]["data"]
    known = {f"VAE_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(settings) <= known, set(settings) - known
    parsed = Settings.from_env(settings)
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > parsed.timeout + pre_stop
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    writable = {m["mountPath"] for m in container["volumeMounts"]}
    home = {e["name"]: e["value"] for e in container["env"]}["BENTOML_HOME"]
    assert any(home.startswith(path) for path in writable)


def test_job_runs_the_score_command(monkeypatch):
    [container] = _pod("job.yaml")["containers"]
    assert container["command"] == ["python", "-m", "vae_service.cli"]
    # --model comes from VAE_MODEL: the image's own model (deploy/image.sh bakes it), or the
    # ConfigMap's, which the Job takes as the Deployment does
    assert {"configMapRef": {"name": "vae-service"}} in container["envFrom"]
    monkeypatch.setenv("VAE_MODEL", "cc:0123456789ab")
    args = parser().parse_args(container["args"])
    assert args.command == "score" and args.engine == "local" and args.model == "cc:0123456789ab"
    assert args.input.startswith("/data/") and args.out.startswith("/data/")
    assert container["workingDir"] == "/home/bentoml/bento/src"  # where the bento puts vae_service/
    assert "vae_service/" in (ROOT / "bentofile.yaml").read_text()
    assert container["securityContext"]["readOnlyRootFilesystem"]


def test_the_bento_holds_every_module_the_cli_imports_to_score():
    """The image's batch Job runs `python -m vae_service.cli score`: every module of this
    repository that it imports must be in the bento (bentofile.yaml's include)."""
    import pathspec  # how BentoML matches include patterns
    code = ("import sys; from vae_service.cli import parser; parser(); "
            "import serving.jobs.local, serving.jobs.drift; "
            "print('\\n'.join(m.__file__ for m in list(sys.modules.values()) "
            "if getattr(m, '__file__', None)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    ours = [Path(f).relative_to(ROOT).as_posix() for f in done.stdout.split()
            if Path(f).is_relative_to(ROOT) and ".venv" not in f]
    include = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", include)
    assert ours and not [f for f in ours if not spec.match_file(f)]
