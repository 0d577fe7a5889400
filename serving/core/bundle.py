"""The bundle format (docs/contract.md): encoder.onnx, decoder.onnx and manifest.json in one
directory.

This module is the one definition of the format: `export` writes bundles with `write_bundle`,
and everything that runs a model reads them with `load_bundle`, which refuses a damaged bundle
with a one-line `BundleError` naming what is wrong.
"""

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving.core.schema import Schema

FORMAT_VERSION = 1
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
MANIFEST_FILE = "manifest.json"
GRAPH_FILES = (ENCODER_FILE, DECODER_FILE)
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # names and versions go into headers and tags


class BundleError(ValueError):
    """A bundle that is missing, damaged or not of this format."""


class Normalization(BaseModel):
    """x_normalized = (x - mean) / std, applied inside the encoder and undone by the decoder."""

    kind: Literal["standardize"] = "standardize"
    mean: list[float]
    std: list[float]


class TrainingSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    dataset: str
    rows: int
    epochs: int
    seed: int
    train_loss: float
    val_loss: float
    val_rows: int | None = None
    best_epoch: int | None = None
    hidden: list[int] | None = None
    beta: float | None = None


class ObservedLevel(BaseModel):
    """The calibration of rows with `observed` cells (serving.core.calibration)."""

    observed: int = Field(ge=1)
    rows: int = Field(ge=1)
    quantiles: list[float] = Field(min_length=2)
    threshold: float


class Calibration(BaseModel):
    """Validation scores at levels 0, 0.1, ..., 100 percent, and the anomaly threshold; with a
    column schema, the same at several observed counts (by_observed), the first being these."""

    score: str
    n_samples: int = Field(ge=1)
    seed: int
    rows: int = Field(ge=1)
    quantiles: list[float] = Field(min_length=2)
    threshold: float
    target_fpr: float = Field(gt=0, lt=1)
    by_observed: list[ObservedLevel] | None = None
    # each feature's median feature_nll over the validation rows (bundles since explain ranks)
    feature_nll_median: list[float] | None = None

    @model_validator(mode="after")
    def _usable(self) -> "Calibration":
        """A threshold of NaN, or beyond every validation score, would never flag a row."""
        for where, level in [("", self)] + [(f"by_observed[{i}].", level)
                                            for i, level in enumerate(self.by_observed or [])]:
            quantiles, threshold = level.quantiles, level.threshold
            if not all(math.isfinite(q) for q in quantiles):
                raise ValueError(f"{where}quantiles holds a value that is not finite")
            if any(a > b for a, b in zip(quantiles, quantiles[1:])):
                raise ValueError(f"{where}quantiles are not in ascending order")
            if not math.isfinite(threshold) or not quantiles[0] <= threshold <= quantiles[-1]:
                raise ValueError(f"{where}threshold {threshold} is not a finite number between "
                                 f"the lowest and highest validation scores "
                                 f"({quantiles[0]:.6g}, {quantiles[-1]:.6g})")
        return self


class Verification(BaseModel):
    """Export parity: the worst gap between onnxruntime and PyTorch over these shapes."""

    batches: list[int]
    n_samples: list[int]
    tolerance: float
    parity: dict[str, dict[str, float]]


class DriftView(BaseModel):
    """The reference of one drift view (serving.core.drift): per column its decile edges and
    the validation rows' share in each bucket (the last, for features, a missing cell's)."""

    columns: list[str]
    edges: list[list[float]]
    shares: list[list[float]]

    @model_validator(mode="after")
    def _consistent(self) -> "DriftView":
        if not len(self.columns) == len(self.edges) == len(self.shares):
            raise ValueError("columns, edges and shares differ in length")
        for name, edges, shares in zip(self.columns, self.edges, self.shares):
            if edges != sorted(edges) or len(shares) - len(edges) not in (1, 2):
                raise ValueError(f"column {name!r}: edges not ascending, or not one bucket "
                                 f"more shares than edges")
        return self


class DriftReference(BaseModel):
    rows: int = Field(ge=1)
    feature: DriftView | None = None
    latent: DriftView | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    format_version: int
    name: str = Field(pattern=IDENTIFIER)
    version: str = Field(pattern=IDENTIFIER)
    created_at: str
    n_features: int = Field(ge=1)
    latent_dim: int = Field(ge=1)
    feature_names: list[str]
    # of a numeric cell (serving.core.scores), and whether the table has categorical columns
    likelihood: Literal["gaussian", "gaussian+categorical", "student-t", "student-t+categorical"]
    schema_: Schema | None = Field(None, alias="schema")  # None: made before column schemas
    sampling: bool = True  # False for the --no-sampling ablation: z = mu, penalty ½‖mu‖²
    precision: Literal["fp32", "int8"] = "fp32"  # of both graphs (`vae export --precision`)
    normalization: Normalization
    opset: int
    sha256: dict[str, str]
    training: TrainingSummary
    calibration: Calibration
    verification: Verification | None = None
    image_shape: list[int] | None = None  # (H, W) when each row is an image
    drift: DriftReference | None = None  # bundles since drift metrics (serving.core.drift)

    @model_validator(mode="after")
    def _consistent(self) -> "Manifest":
        if len(self.feature_names) != self.n_features:
            raise ValueError(f"feature_names has {len(self.feature_names)} names; "
                             f"n_features is {self.n_features}")
        for field in ("mean", "std"):
            values = getattr(self.normalization, field)
            if len(values) != self.n_features:
                raise ValueError(f"normalization.{field} has {len(values)} values; "
                                 f"n_features is {self.n_features}")
        if self.likelihood.startswith("student-t") and self.schema_ is None:
            raise ValueError("a student-t likelihood needs the column schema")
        if self.schema_ is not None and self.schema_.names != self.feature_names:
            raise ValueError("schema.columns do not name the feature_names, in order")
        if sorted(self.sha256) != sorted(GRAPH_FILES):
            raise ValueError(f"sha256 names {sorted(self.sha256)}; expected {list(GRAPH_FILES)}")
        return self

    def public(self) -> dict:
        """What /metadata shows: everything but the normalization's mean and std, the
        calibration's quantiles and the drift reference's edges and shares (feature_names, the
        schema and the watched columns stay: clients need them)."""
        public = self.model_dump(exclude={"normalization": {"mean", "std"},
                                          "calibration": {"quantiles", "by_observed",
                                                          "feature_nll_median"},
                                          "drift": {"feature": {"edges", "shares"},
                                                    "latent": {"edges", "shares"}}},
                                 exclude_none=True, by_alias=True)
        if self.calibration.by_observed:
            public["calibration"]["by_observed"] = [
                {"observed": level.observed, "rows": level.rows, "threshold": level.threshold}
                for level in self.calibration.by_observed]
        return public


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: Manifest

    @property
    def encoder_path(self) -> Path:
        return self.path / ENCODER_FILE

    @property
    def decoder_path(self) -> Path:
        return self.path / DECODER_FILE


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "manifest"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read and verify a bundle directory: manifest fields, graph files and their sha256."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory; expected a directory written by "
                          f"`vae export` ({', '.join(GRAPH_FILES)}, {MANIFEST_FILE})")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {path} has no {MANIFEST_FILE}; expected a directory written "
                          f"by `vae export`")
    try:
        raw = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path} is not valid JSON ({e})") from None
    except RecursionError:
        raise BundleError(f"{manifest_path} is nested too deeply to be a manifest") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{manifest_path} holds a {type(raw).__name__}; expected an object")
    if raw.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path} has format_version {raw.get('format_version')!r}; "
                          f"this runtime reads format_version {FORMAT_VERSION}")
    try:
        manifest = Manifest.model_validate(raw)
    except RecursionError:
        raise BundleError(f"{manifest_path} is nested too deeply to be a manifest") from None
    except ValidationError as e:
        raise BundleError(f"{manifest_path} is invalid: {_one_line(e)}") from None
    for name in GRAPH_FILES:
        graph = path / name
        if not graph.is_file():
            raise BundleError(f"bundle {path} has no {name}")
        actual = file_sha256(graph)
        if actual != manifest.sha256[name]:
            raise BundleError(f"{graph} has sha256 {actual[:12]}…; the manifest expects "
                              f"{manifest.sha256[name][:12]}…: the file was changed or damaged")
    return Bundle(path=path, manifest=manifest)


def write_bundle(out: str | os.PathLike, encoder: bytes, decoder: bytes, manifest: dict) -> Bundle:
    """Write a bundle atomically: into a temporary sibling directory, then renamed into place.

    `manifest` holds every field but `format_version` and `sha256`, which are filled in here.
    An existing bundle at `out` is replaced; any other existing path is refused.
    """
    out = Path(out)
    if out.exists() and not (out / MANIFEST_FILE).is_file() and any(out.iterdir()):
        raise BundleError(f"{out} exists and is not a bundle; choose a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, content in ((ENCODER_FILE, encoder), (DECODER_FILE, decoder)):
            (tmp / name).write_bytes(content)
        fields = {"format_version": FORMAT_VERSION, **manifest,
                  "sha256": {name: file_sha256(tmp / name) for name in GRAPH_FILES}}
        Manifest.model_validate(fields)  # never write a bundle that load_bundle would refuse
        (tmp / MANIFEST_FILE).write_text(json.dumps(fields, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(out)
