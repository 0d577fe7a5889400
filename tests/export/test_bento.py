"""`bentoml build` packages the service with the registered model and without torch."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from serving.core.bundle import load_bundle
from tests.conftest import ROOT, run_cli


def test_bentoml_build_packages_the_model_and_no_torch(digits_run, tmp_path):
    env = {"BENTOML_HOME": str(tmp_path / "home"), "BENTOML_DO_NOT_TRACK": "True"}
    exported = run_cli("export", str(digits_run), "--out", str(tmp_path / "bundle"), "--register",
                       env=env)
    assert exported.returncode == 0, exported.stderr
    version = load_bundle(tmp_path / "bundle").manifest.version
    environment = {k: v for k, v in os.environ.items() if k != "VAE_MODEL"}
    built = subprocess.run([str(Path(sys.executable).with_name("bentoml")), "build"], cwd=ROOT,
                           env={**environment, **env}, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr + built.stdout
    [bento] = (tmp_path / "home" / "bentos" / "vae").glob("*/bento.yaml")
    info = yaml.safe_load(bento.read_text())
    assert info["service"] == "serving.http.app:VAE"
    models = [m["tag"] for service in info["services"] for m in service["models"]]
    assert models == [f"vae:{version}"]
    requirements = (bento.parent / "env" / "python" / "requirements.txt").read_text().lower()
    assert "onnxruntime" in requirements and "bentoml==" in requirements
    assert "torch" not in requirements and "scikit-learn" not in requirements
    sources = {p.relative_to(bento.parent / "src").as_posix()
               for p in (bento.parent / "src").rglob("*.py")}
    assert "serving/http/service.py" in sources and "serving/core/runtime.py" in sources
    # of training, only the torch-free configuration the CLI's parser reads
    assert {s for s in sources if s.startswith("training/")} == {"training/__init__.py",
                                                                 "training/config.py"}
    assert not any(s.startswith(("export/", "tests/")) for s in sources)
