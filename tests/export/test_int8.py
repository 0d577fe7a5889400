"""Issue 27: `vae export --precision int8`: static int8 graphs behind a gate, served by the same
runtime, and a row's answer still independent of its batch-mates."""

import numpy as np
import pytest

from export.exporter import export_run
from serving.core.bundle import load_bundle
from serving.core.runtime import VAEGraphs, VAERuntime
from tests.conftest import run_cli, served_answer


@pytest.fixture(scope="module")
def int8_bundle(digits_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "bundle"
    done = run_cli("export", str(digits_run), "--out", str(out), "--precision", "int8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(int8)" in done.stdout
    return out


def test_an_int8_bundle_records_its_precision_and_its_gate(int8_bundle, bundle_dir,
                                                           fp32_bundle_dir):
    manifest = load_bundle(int8_bundle).manifest
    assert manifest.precision == "int8" and manifest.version.endswith("-int8")
    assert manifest.version != load_bundle(fp32_bundle_dir).manifest.version
    assert load_bundle(fp32_bundle_dir).manifest.precision == "fp32"
    assert load_bundle(bundle_dir).manifest.version == manifest.version  # the default: int8
    gate = manifest.model_extra["quantization"]
    assert gate["max_score_difference"] <= gate["tolerance"]["max_score_difference"]
    assert gate["auroc_int8"] >= gate["auroc_fp32"] - gate["tolerance"]["max_auroc_drop"]
    assert VAERuntime(load_bundle(int8_bundle)).manifest.public()["precision"] == "int8"


def test_the_int8_graphs_outputs_are_not_confined_to_256_levels(int8_bundle, digits_x):
    """The last layer writes float: one uint8 range over x_mean and x_logvar side by side
    would leave each feature at most 256 values."""
    runtime = VAERuntime(load_bundle(int8_bundle), threads=1)
    mu, logvar, z = runtime.encode(digits_x, runtime.noise(0, 4).rows(0, len(digits_x)))
    x_mean, x_logvar = runtime.graphs.decode(z)
    for values in (mu[:, 0], logvar[:, 0], x_mean[..., 20], x_logvar[..., 20]):
        assert len(np.unique(values)) > 256


def test_int8_answers_do_not_depend_on_batch_mates_on_any_surface(int8_bundle, digits_x,
                                                                 tmp_path):
    runtime = VAERuntime(load_bundle(int8_bundle), threads=1)
    x = digits_x[:200]
    whole = runtime.score(x, runtime.noise(3, 16)).score
    alone = [runtime.score(x[i:i + 1], runtime.noise(3, 16, i)).score[0] for i in range(0, 200, 9)]
    assert np.array_equal(alone, whole[::9])
    chunks = [runtime.score(x[i:i + 37], runtime.noise(3, 16, i)).score for i in range(0, 200, 37)]
    assert np.array_equal(np.concatenate(chunks), whole)
    np.save(tmp_path / "rows.npy", x)
    done = run_cli("score", str(tmp_path / "rows.npy"), "--model", str(int8_bundle), "--out",
                   str(tmp_path / "scores.npy"), "--seed", "3", "--chunk-rows", "64", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "scores.npy")["score"], whole)
    answer = served_answer(int8_bundle, "/anomaly_score", {"x": x[20:25].tolist(), "seed": 3})
    assert answer["model_version"].endswith("-int8")
    assert answer["score"] == runtime.score(x[20:25], runtime.noise(3, 16)).score.tolist()


def test_dynamic_quantization_would_break_the_batch_promise(fp32_bundle_dir, digits_x,
                                                            tmp_path):
    """Why the scales are static: onnxruntime's dynamic quantization scales each call's input
    as a whole, so the same row scores differently alone and among others."""
    from onnxruntime.quantization import quantize_dynamic

    bundle = load_bundle(fp32_bundle_dir)
    for name in ("encoder", "decoder"):
        quantize_dynamic(bundle.path / f"{name}.onnx", tmp_path / f"{name}.onnx")
    graphs = VAEGraphs(tmp_path / "encoder.onnx", tmp_path / "decoder.onnx",
                       bundle.manifest.n_features, bundle.manifest.latent_dim)
    runtime = VAERuntime(bundle, threads=1)
    x = digits_x[:64]
    together = graphs.score_rows(x, runtime.noise(3, 16), True)[0].score
    alone = np.array([graphs.score_rows(x[i:i + 1], runtime.noise(3, 16, i), True)[0].score[0]
                      for i in range(len(x))])
    assert not np.array_equal(alone, together)


def test_an_export_that_fails_the_gate_is_refused_in_one_line(digits_run, tmp_path,
                                                             monkeypatch):
    from export import quantize
    from export.quantize import GateError

    monkeypatch.setattr(quantize, "MAX_SCORE_DIFFERENCE", 1e-9)
    with pytest.raises(GateError, match=r"largest validation score difference is [\d.]+% of "
                                        r"the fp32 score .* AUROC against shuffled rows "
                                        r"0\.\d+ against fp32's 0\.\d+"):
        export_run(digits_run, tmp_path / "refused", precision="int8")
    assert not (tmp_path / "refused").exists()


def test_ungated_int8_graphs_are_written_with_the_gates_refusal_and_tolerances(
        digits_run, tmp_path, monkeypatch):
    """bench/ times the graphs the gate refuses: export_run(gated=False) writes them once,
    and the manifest keeps the gate's figures, its finite tolerances and why it refused."""
    from export import quantize

    monkeypatch.setattr(quantize, "MAX_SCORE_DIFFERENCE", 1e-9)
    bundle = export_run(digits_run, tmp_path / "ungated", precision="int8", gated=False)
    gate = bundle.manifest.model_extra["quantization"]
    assert bundle.manifest.precision == "int8" and bundle.manifest.version.endswith("-int8")
    assert gate["refused"].startswith("int8 graphs fail the gate: their largest")
    assert gate["tolerance"] == {"max_score_difference": 1e-9, "max_auroc_drop": 0.002}
    assert gate["max_score_difference"] > 1e-9


def test_the_default_export_falls_back_to_fp32_where_the_gate_refuses(digits_run, tmp_path,
                                                                      monkeypatch, capsys):
    from export import quantize
    from vae_service import cli

    monkeypatch.setattr(quantize, "MAX_SCORE_DIFFERENCE", 1e-9)
    assert cli.main(["export", str(digits_run), "--out", str(tmp_path / "auto")]) == 0
    out, err = capsys.readouterr()
    assert "(fp32)" in out
    assert len(err.splitlines()) == 1 and err.startswith("vae export: fp32, since int8 graphs "
                                                         "fail the gate: their largest")
    manifest = load_bundle(tmp_path / "auto").manifest
    assert manifest.precision == "fp32" and not manifest.version.endswith("-int8")
    assert "fail the gate" in manifest.model_extra["quantization"]["refused"]


def test_a_model_whose_logits_are_the_last_product_exports_in_int8(tmp_path):
    """With every column categorical the decoder's last Gemm writes the logits output itself:
    its float result must keep that name."""
    import pandas as pd

    rng = np.random.default_rng(0)
    a = rng.choice(list("abcd"), 1500)
    b = np.where(rng.random(1500) < 0.9, a, rng.choice(list("abcd"), 1500))
    pd.DataFrame({"a": a, "b": b, "c": rng.choice(["x", "y"], 1500)}).to_csv(
        tmp_path / "t.csv", index=False)
    done = run_cli("train", "--data", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"),
                   "--epochs", "5", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli("export", str(tmp_path / "run"), "--out", str(tmp_path / "int8"),
                   "--precision", "int8")
    assert done.returncode == 0, done.stderr[-2000:]
    runtime = VAERuntime(load_bundle(tmp_path / "int8"), threads=1)
    rows = pd.read_csv(tmp_path / "t.csv").iloc[:50]
    assert np.isfinite(runtime.score(rows, runtime.noise(0, 16)).score).all()
