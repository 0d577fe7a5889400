"""The export round trip: graph contract, parity, calibration, reproducibility, registration."""

import json

import numpy as np
import onnx
import pytest

from export.exporter import export_run, validation_scores
from export.verify import PARITY_TOLERANCE, RANDOM_OPS, ExportError, check_graph, check_parity
from serving.core.bundle import load_bundle
from serving.core.runtime import VAERuntime
from serving.core.scores import calibrate
from tests.conftest import SMALL, run_cli, run_cli_here
from training.train import load_run


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_graph_contract(bundle_dir):
    encoder = onnx.load(bundle_dir / "encoder.onnx")
    decoder = onnx.load(bundle_dir / "decoder.onnx")
    d, f = SMALL["latent_dim"], 64
    assert {i.name: _dims(i) for i in encoder.graph.input} == {
        "x": ["batch", f], "eps": ["n_samples", "batch", d]}
    assert {o.name: _dims(o) for o in encoder.graph.output} == {
        "mu": ["batch", d], "logvar": ["batch", d], "z": ["n_samples", "batch", d]}
    assert {i.name: _dims(i) for i in decoder.graph.input} == {"z": ["batch", d]}
    assert {o.name: _dims(o) for o in decoder.graph.output} == {
        "x_mean": ["batch", f], "x_logvar": ["batch", f]}
    for graph in (encoder, decoder):
        assert not {n.op_type for n in graph.graph.node} & RANDOM_OPS
        assert all(t.data_location == onnx.TensorProto.DEFAULT for t in graph.graph.initializer)
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta["version"] == load_bundle(bundle_dir).manifest.version
        assert json.loads(meta["feature_names"])[0] == "pixel_0_0"
    assert sorted(p.name for p in bundle_dir.iterdir()) == [
        "decoder.onnx", "encoder.onnx", "manifest.json"]


def test_parity_figures_are_recorded_and_within_tolerance(bundle_dir):
    verification = load_bundle(bundle_dir).manifest.verification
    assert verification.batches == [1, 2, 7, 512] and verification.n_samples == [1, 16]
    parity = verification.parity
    assert set(parity) == {"mu", "logvar", "z", "x_mean", "x_logvar", "score", "recon_nll",
                           "kl", "feature_nll"}
    for name, figures in parity.items():
        assert figures["max_abs_diff"] <= PARITY_TOLERANCE * max(1, figures["max_abs_value"]), name
    assert parity["mu"]["max_abs_diff"] <= PARITY_TOLERANCE  # order-1 outputs: absolute


def test_parity_failure_aborts_with_the_figures():
    worst = {"mu": {"max_abs_diff": 3e-5, "max_abs_value": 2.0},
             "score": {"max_abs_diff": 1e-3, "max_abs_value": 500.0}}
    with pytest.raises(ExportError, match=r"on mu; max abs differences: mu 3.00e-05 \(of 2\)"):
        check_parity(worst)


def test_random_operators_and_sidecars_are_refused(bundle_dir):
    graph = onnx.load(bundle_dir / "decoder.onnx")
    node = onnx.helper.make_node("RandomNormalLike", ["z"], ["noise"])
    graph.graph.node.append(node)
    with pytest.raises(ExportError, match=r"random operators \['RandomNormalLike'\]"):
        check_graph(graph, "decoder")
    graph = onnx.load(bundle_dir / "decoder.onnx")
    graph.graph.initializer[0].data_location = onnx.TensorProto.EXTERNAL
    with pytest.raises(ExportError, match="fails onnx.checker|external data"):
        check_graph(graph, "decoder")


def test_calibration_is_the_serving_score_of_validation_rows(bundle_dir, digits_run, runtime):
    manifest = load_bundle(bundle_dir).manifest
    _, saved = load_run(digits_run)
    x_val = saved["x_val"].numpy()
    calibration = manifest.calibration
    scores = runtime.score(x_val, runtime.noise(calibration.seed, calibration.n_samples)).score
    np.testing.assert_array_equal(scores, validation_scores(runtime.graphs, x_val, True))
    quantiles, threshold = calibrate(scores, manifest.calibration.target_fpr)
    assert manifest.calibration.threshold == threshold
    assert manifest.calibration.quantiles == quantiles
    assert np.mean(scores > threshold) <= manifest.calibration.target_fpr + 1 / len(scores)


def test_same_seed_gives_the_same_graph_outputs(tmp_path, runtime, digits_x, digits_run_again):
    again = VAERuntime(export_run(digits_run_again, tmp_path / "bundle"))
    assert again.version == runtime.version
    a, b = runtime.score(digits_x, runtime.noise(5, 8)), again.score(digits_x, again.noise(5, 8))
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(runtime.sample(10, seed=1)[0], again.sample(10, seed=1)[0])


def test_no_sampling_bundle_scores_recon_plus_penalty(tmp_path, digits_x, no_sampling_run):
    ablation = VAERuntime(export_run(no_sampling_run, tmp_path / "bundle"))
    assert ablation.manifest.sampling is False
    scored = ablation.score(digits_x[:50], ablation.noise(0, 4))
    mu, logvar, z = ablation.graphs.encode(digits_x[:50], ablation.noise(0, 4, 0).rows(0, 50))
    assert np.all(logvar == 0) and np.array_equal(z, np.broadcast_to(mu, z.shape))
    np.testing.assert_allclose(scored.kl, 0.5 * (mu**2).sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scored.score, scored.recon_nll + scored.kl, rtol=1e-6)


def test_cli_export_registers_in_the_model_store(digits_run, tmp_path):
    env = {"BENTOML_HOME": str(tmp_path / "bentoml")}
    result = run_cli("export", str(digits_run), "--out", str(tmp_path / "b"), "--register",
                     env=env)
    assert result.returncode == 0, result.stderr
    version = load_bundle(tmp_path / "b").manifest.version
    assert f"registered vae:{version}" in result.stdout
    check = ("import sys; from serving.store import load_runtime; r = load_runtime('vae:latest');"
             "print(r.version, r.bundle.manifest.calibration.threshold, 'torch' in sys.modules)")
    loaded = run_cli_python(check, env)
    assert loaded.split() == [version, str(load_bundle(tmp_path / "b").manifest.calibration
                                           .threshold), "False"]
    again = run_cli("export", str(digits_run), "--out", str(tmp_path / "b"), "--register", env=env)
    assert again.returncode == 0 and f"registered vae:{version}" in again.stdout

    # issue 28: a new threshold is a new version, registered beside the first, which stays
    other = run_cli("export", str(digits_run), "--out", str(tmp_path / "c"), "--register",
                    "--target-fpr", "0.005", env=env)
    assert other.returncode == 0, other.stderr
    assert "at 0.5% validation false positives" in other.stdout  # not "0%"
    new = load_bundle(tmp_path / "c").manifest
    assert new.version != version and f"registered vae:{new.version}" in other.stdout
    first = run_cli_python("from serving.store import load_runtime; "
                           f"print(load_runtime('vae:{version}').threshold)", env)
    kept = load_bundle(tmp_path / "b").manifest.calibration.threshold
    assert float(first) == pytest.approx(kept, rel=1e-6)  # the first bundle, not overwritten


def test_the_version_is_a_digest_of_what_changes_an_answer(digits_run, tmp_path):
    """Issue 28: the same run and calibration give the same version; another target, another
    threshold or another run give another. --threshold sets the threshold itself."""
    from export.exporter import export_run

    same = [export_run(digits_run, tmp_path / name, target_fpr=0.01).manifest
            for name in ("a", "b")]
    assert same[0].version == same[1].version
    other = export_run(digits_run, tmp_path / "c", target_fpr=0.05).manifest
    assert other.version != same[0].version
    quantiles = same[0].calibration.quantiles
    given = export_run(digits_run, tmp_path / "d", threshold=quantiles[950]).manifest
    assert given.calibration.threshold == quantiles[950] and given.version != same[0].version
    assert 0.04 <= given.calibration.target_fpr <= 0.06
    done = run_cli("export", str(digits_run), "--out", str(tmp_path / "e"), "--threshold",
                   str(quantiles[-1] + 1))
    assert done.returncode == 1 and "is above every validation row's score" in done.stderr
    done = run_cli("export", str(digits_run), "--out", str(tmp_path / "e"), "--threshold", "1",
                   "--target-fpr", "0.1")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def run_cli_python(code: str, env: dict) -> str:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_export_of_a_missing_run_is_one_clear_line(tmp_path):
    result = run_cli_here("export", str(tmp_path), "--out", str(tmp_path / "b"))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"vae export: error: {tmp_path} has no model.pt; train it "
                                     f"first with `vae train --out {tmp_path}` (or finish it "
                                     f"with --resume)")
