"""`make fuzz` in the suite, smaller: schemathesis over the OpenAPI against a real server."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_schemathesis_finds_no_server_error(bundle_dir):
    pytest.importorskip("schemathesis")
    done = subprocess.run([sys.executable, "-m", "bench.fuzz", "--model", str(bundle_dir),
                           "--examples", "30"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "(no 5xx)" in done.stdout
