"""A damaged bundle is refused with one line naming the damage."""

import json
import shutil

import pytest

from serving.core.bundle import BundleError, file_sha256, load_bundle
from serving.store import locate_bundle
from serving.store import load_runtime


@pytest.fixture
def copy(bundle_dir, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(bundle_dir, target)
    return target


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_a_good_bundle_loads(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest.n_features == 64 and bundle.manifest.format_version == 1
    assert len(bundle.manifest.calibration.quantiles) == 1001


def test_a_tampered_graph_is_refused(copy):
    with open(copy / "encoder.onnx", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(BundleError, match=r"encoder.onnx has sha256 .*: the file was changed or "
                                          r"damaged"):
        load_bundle(copy)


@pytest.mark.parametrize("damage,message", [
    (lambda b: (b / "decoder.onnx").unlink(), r"has no decoder.onnx"),
    (lambda b: (b / "manifest.json").unlink(), r"has no manifest.json"),
    (lambda b: (b / "manifest.json").write_text("{not json"), r"manifest.json is not valid JSON"),
    (lambda b: (b / "manifest.json").write_text("[1]"), r"holds a list; expected an object"),
    (lambda b: edit_manifest(b, lambda m: m.update(format_version=9)),
     r"has format_version 9; this runtime reads format_version 1"),
    (lambda b: edit_manifest(b, lambda m: m.pop("latent_dim")),
     r"manifest.json is invalid: latent_dim: Field required"),
    (lambda b: edit_manifest(b, lambda m: m["feature_names"].pop()),
     r"feature_names has 63 names; n_features is 64"),
    (lambda b: edit_manifest(b, lambda m: m["calibration"].update(target_fpr=2)),
     r"calibration.target_fpr: Input should be less than 1"),
    (lambda b: edit_manifest(b, lambda m: m["calibration"].update(threshold=float("nan"))),
     r"threshold nan is not a finite number between the lowest and highest validation"),
    (lambda b: edit_manifest(b, lambda m: m["calibration"].update(threshold=1e9)),
     r"threshold 1000000000.0 is not a finite number between"),
    (lambda b: edit_manifest(b, lambda m: m["calibration"]["quantiles"].reverse()),
     r"quantiles are not in ascending order"),
    (lambda b: edit_manifest(b, lambda m: m.update(version="1\r\nX-Injected: 1")),
     r"version: String should match pattern"),
])
def test_each_kind_of_damage_has_its_message(copy, damage, message):
    damage(copy)
    with pytest.raises(BundleError, match=message) as error:
        load_bundle(copy)
    assert "\n" not in str(error.value)


def _swap_graphs(bundle):
    enc, dec = bundle / "encoder.onnx", bundle / "decoder.onnx"
    enc.rename(bundle / "tmp")
    dec.rename(enc)
    (bundle / "tmp").rename(dec)
    edit_manifest(bundle, lambda m: m.update(sha256={"encoder.onnx": file_sha256(enc),
                                                     "decoder.onnx": file_sha256(dec)}))


def test_graphs_that_break_the_contract_are_refused(copy):
    _swap_graphs(copy)
    with pytest.raises(BundleError, match=r"the encoder graph has inputs \['z'\]; "
                                          r"expected \['eps', 'x'\]"):
        load_runtime(copy)
    (copy / "encoder.onnx").write_bytes(b"garbage")
    edit_manifest(copy, lambda m: m["sha256"].update({"encoder.onnx": file_sha256(
        copy / "encoder.onnx")}))
    with pytest.raises(BundleError, match=r"the encoder graph is not loadable by onnxruntime"):
        load_runtime(copy)


def test_wrong_width_in_manifest_is_caught_against_the_graph(copy):
    def narrow(m):
        m.update(n_features=63, feature_names=m["feature_names"][:63])
        m["schema"]["columns"] = m["schema"]["columns"][:63]
        m["normalization"].update(mean=m["normalization"]["mean"][:63],
                                  std=m["normalization"]["std"][:63])
    edit_manifest(copy, narrow)
    with pytest.raises(BundleError, match=r"the encoder input x is tensor\(float\) \['batch', "
                                          r"64\]; expected float32 of rank 2 with 63 on axis 1"):
        load_runtime(copy)


def test_locating_models(bundle_dir, tmp_path):
    assert locate_bundle(bundle_dir) == bundle_dir
    with pytest.raises(BundleError, match=r"is not a bundle directory"):
        locate_bundle(tmp_path / "missing" / "bundle")
    with pytest.raises(BundleError, match=r"is not a bundle directory"):
        locate_bundle(bundle_dir / "manifest.json")


def test_models_packaged_in_a_bento_are_found_without_a_store(bundle_dir, tmp_path, monkeypatch):
    models = tmp_path / "bento" / "models" / "vae"
    shutil.copytree(bundle_dir, models / "v1")
    (models / "latest").write_text("v1")
    monkeypatch.setenv("BENTO_PATH", str(tmp_path / "bento"))
    assert locate_bundle("vae:latest") == models / "v1"
    assert locate_bundle("vae") == models / "v1"
    assert locate_bundle("vae:v1") == models / "v1"


def test_a_manifest_of_other_graphs_is_refused(copy):
    """The graphs' metadata names their model; a manifest naming another is not theirs."""
    edit_manifest(copy, lambda m: m.update(version="0123456789ab"))
    with pytest.raises(BundleError, match=r"the manifest's version is '0123456789ab' but "
                                          r"encoder.onnx says '[0-9a-f]{12}(-int8)?'"):
        load_runtime(copy)


def test_a_manifest_with_two_feature_names_swapped_is_refused(copy):
    """Issue 24 #9: every identity field the graphs carry is compared, not only the version."""
    def swap(m):
        names = m["feature_names"]
        names[0], names[1] = names[1], names[0]
        columns = m["schema"]["columns"]
        columns[0], columns[1] = columns[1], columns[0]
    edit_manifest(copy, swap)
    with pytest.raises(BundleError, match=r"the manifest's feature_names differs from what "
                                          r"encoder.onnx carries"):
        load_runtime(copy)


def test_the_decoder_in_the_encoders_place_is_refused_in_one_line(copy):
    """Issue 24 #10: graphs swapped (sha256 updated to match) fail the graph contract."""
    from serving.core.bundle import file_sha256
    encoder, decoder = (copy / "encoder.onnx").read_bytes(), (copy / "decoder.onnx").read_bytes()
    (copy / "encoder.onnx").write_bytes(decoder)
    (copy / "decoder.onnx").write_bytes(encoder)
    edit_manifest(copy, lambda m: m["sha256"].update(
        {"encoder.onnx": file_sha256(copy / "encoder.onnx"),
         "decoder.onnx": file_sha256(copy / "decoder.onnx")}))
    with pytest.raises(BundleError, match=r"the encoder graph has inputs \['z'\]"):
        load_runtime(copy)


def test_a_deeply_nested_manifest_is_one_line(copy):
    """Issue 24 #11: 100,000 levels of nesting are refused without a RecursionError."""
    (copy / "manifest.json").write_text('{"format_version": 1, "name": ' + "[" * 100_000
                                        + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="nested too deeply"):
        load_bundle(copy)
