"""deploy/monitoring against the real parts: promtool, a real Prometheus (Debian's 2.42) scraping
a real `bentoml serve`, the drift counters and PSI, and `vae drift` offline (issue 28, item 1)."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from bench.common import free_port
from tests.conftest import ROOT, run_cli

MONITORING = ROOT / "deploy" / "monitoring"
NO_PROMETHEUS = "Debian's prometheus is not installed (apt-get install prometheus; make test " \
                "installs it where it runs as root)"


def validation_rows(run_dir: Path) -> np.ndarray:
    from training.train import load_run
    return np.ascontiguousarray(load_run(run_dir)[1]["x_val"].numpy(), dtype=np.float32)


def shifted(x: np.ndarray) -> np.ndarray:
    """Digits with a block of pixels inked: what a changed scanner might send."""
    out = x.copy()
    out[:, 20:40] = np.clip(out[:, 20:40] + 6, 0, 16)
    return out


@pytest.mark.skipif(shutil.which("promtool") is None, reason=NO_PROMETHEUS)
def test_the_rules_and_the_config_pass_promtool():
    for check, name in (("rules", "rules.yml"), ("config", "prometheus.yml")):
        done = subprocess.run(["promtool", "check", check, str(MONITORING / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_prometheus_rule_holds_the_rules_file():
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((MONITORING / "rules.yml").read_text())


def test_vae_drift_is_quiet_on_the_reference_and_exits_3_on_shifted_rows(digits_run,
                                                                          bundle_dir, tmp_path):
    x = validation_rows(digits_run)
    np.save(tmp_path / "same.npy", x)
    np.save(tmp_path / "shifted.npy", shifted(x))
    same = run_cli("drift", str(tmp_path / "same.npy"), "--model", str(bundle_dir), "--out",
                   str(tmp_path / "same"))
    assert same.returncode == 0, same.stderr
    report = json.loads((tmp_path / "same" / "drift.json").read_text())
    # the reference's own rows: every feature's and latent dimension's buckets exactly
    assert max(report["psi"]["feature"].values()) < 1e-9
    assert max(report["psi"]["latent"].values()) < 1e-9
    assert report["psi"]["score"]["score"] < 0.05  # another noise seed than the calibration's
    moved = run_cli("drift", str(tmp_path / "shifted.npy"), "--model", str(bundle_dir),
                    "--out", str(tmp_path / "moved"))
    assert moved.returncode == 3, moved.stderr
    report = json.loads((tmp_path / "moved" / "drift.json").read_text())
    assert report["psi"]["score"]["score"] > 0.25 and "score" in report["drifted"]
    assert (tmp_path / "moved" / "drift.svg").read_text().startswith("<svg")
    assert "drift: " in moved.stdout and "above 0.25" in moved.stdout


def test_vae_drift_refuses_a_bad_threshold_in_one_line(bundle_dir, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 64), np.float32))
    done = run_cli("drift", str(tmp_path / "x.npy"), "--model", str(bundle_dir),
                   "--threshold", "0", "--out", str(tmp_path / "o"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "--threshold 0.0: expected a PSI above 0" in done.stderr


# -- a real Prometheus scraping a real server ---------------------------------------------------

def fast_rules(path: Path) -> None:
    """rules.yml with 20 s windows and 5 s `for:`, so that a test sees an alert within a minute
    (the shipped file: 5 minute windows, 5 to 10 minutes `for:`)."""
    text = (MONITORING / "rules.yml").read_text().replace("[5m]", "[20s]")
    for shipped in ("for: 10m", "for: 5m"):
        text = text.replace(shipped, "for: 5s")
    path.write_text(text)


@pytest.fixture(scope="module")
def prometheus_and_server(bundle_dir, tmp_path_factory):
    if shutil.which("prometheus") is None:
        pytest.skip(NO_PROMETHEUS)
    from tests.http.test_serve import start_server

    home = tmp_path_factory.mktemp("prometheus")
    server = start_server(bundle_dir, home, home / "serve.log")
    fast_rules(home / "rules.yml")
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"][0]["static_configs"] = [{"targets": [server["url"][7:]]}]
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={home / 'prometheus.yml'}",
         f"--storage.tsdb.path={home / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(home / "prometheus.log", "w"), stderr=subprocess.STDOUT,
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert prometheus.poll() is None, (home / "prometheus.log").read_text()[-2000:]
        time.sleep(0.5)
    yield {"prometheus": url, "server": server, "home": home}
    for process in (prometheus, server["process"]):
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def query(url: str, expr: str) -> list:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def value(url: str, expr: str) -> float | None:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else None


def firing(url: str) -> set[str]:
    alerts = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}


def send_for(server: str, rows: np.ndarray, seconds: float, n_samples: int,
             until=lambda: False) -> None:
    """50-row /anomaly_score requests for `seconds` (or until `until()`)."""
    rng = np.random.default_rng(0)
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline and not until():
            batch = rows[rng.choice(len(rows), 50)]
            answer = client.post(f"{server}/anomaly_score",
                                 json={"x": batch.tolist(), "n_samples": n_samples})
            assert answer.status_code == 200, answer.text


def test_drift_crosses_the_rule_and_fires_the_alert_in_a_real_prometheus(
        prometheus_and_server, digits_run, bundle_dir):
    url, server = prometheus_and_server["prometheus"], prometheus_and_server["server"]["url"]
    k = json.loads((bundle_dir / "manifest.json").read_text())["calibration"]["n_samples"]
    x = validation_rows(digits_run)
    score_psi = 'vae:drift_psi:rate5m{view="score"}'

    send_for(server, x, 25, k)  # the reference's own distribution: 20 s windows of it
    calm = {expr: value(url, expr) for expr in (score_psi, "vae:drift_psi_worst_feature:rate5m")}
    assert all(v is not None and v < 0.1 for v in calm.values()), calm
    assert not firing(url) & {"VAEScoreDrift", "VAEFeatureDrift", "VAEAnomalyRateHigh"}

    started = time.monotonic()
    wanted = {"VAEScoreDrift", "VAEFeatureDrift", "VAEAnomalyRateHigh"}
    send_for(server, shifted(x), 120, k, until=lambda: wanted <= firing(url))
    to_alert = time.monotonic() - started
    drifted = value(url, score_psi)
    print(f"\nscore PSI, no drift: {calm[score_psi]:.3f}; drifted: {drifted:.2f}; worst "
          f"feature PSI {value(url, 'vae:drift_psi_worst_feature:rate5m'):.2f}; every alert "
          f"fired {to_alert:.0f} s after the first shifted row (20 s windows, for: 5s)")
    assert wanted <= firing(url), (firing(url), drifted)
    assert drifted > 0.25
    assert not firing(url) & {"VAEServerErrors", "VAELatencyHigh"}

    # every panel of the Grafana dashboard is a query this Prometheus answers, with data
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            # no 5xx answered: that ratio's numerator has no series, so it is empty
            assert query(url, target["expr"]) or "5xx" in panel["title"], panel["title"]
