import subprocess
import sys

from tests.conftest import ROOT


def test_serving_never_imports_torch():
    code = ("import sys, serving.core.runtime, serving.core.bundle, serving.core.scores, serving.core.noise, "
            "serving.tables.read, serving.tables.labels, serving.jobs.evaluate, vae_service.cli as cli; cli.parser(); "
            "print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'training', 'export')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # the CLI's parser takes training's defaults from training.config (dataclasses only)
    assert result.stdout.strip() == "['training', 'training.config']"
