"""Training data: scikit-learn's embedded data sets or a numeric file, split and normalized."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serving.core.rows import InputError
from serving.tables.labels import read_labelled
from serving.tables.read import read_table

EMBEDDED = ("digits", "breast-cancer", "wine", "iris")


@dataclass
class Dataset:
    name: str
    x: np.ndarray  # (N, F) float32
    feature_names: list[str]
    labels: np.ndarray | None = None  # class of each row, where the data set has one (plots)
    image_shape: tuple[int, int] | None = None  # (H, W) when each row is an image
    label_column: str | None = None  # with a label column: its values, and which are anomalous
    label_values: np.ndarray | None = None
    anomalous: np.ndarray | None = None


def load_dataset(source: str, label_column: str | None = None,
                 normal_value: str | None = None) -> Dataset:
    """`digits`, `breast-cancer`, `wine`, `iris`, or a path to a .csv, .parquet or .npy file (which may have a
    label column saying which rows are normal)."""
    if label_column is not None:
        if source in EMBEDDED or not Path(source).suffix:
            raise InputError(f"--label-column needs a .csv, .parquet or .npy file as --data, "
                             f"not {source!r}")
        table = read_labelled(source, label_column, normal_value)
        names = table.feature_names or [f"f{i}" for i in range(table.x.shape[1])]
        return Dataset(source, table.x, names, label_column=label_column,
                       label_values=table.labels, anomalous=table.anomalous)
    if source == "digits":
        from sklearn.datasets import load_digits
        bunch = load_digits()
        return Dataset("digits", bunch.data.astype(np.float32), list(bunch.feature_names),
                       bunch.target, image_shape=(8, 8))
    if source in EMBEDDED:  # scikit-learn's other embedded tables
        from sklearn import datasets
        bunch = getattr(datasets, f"load_{source.replace('-', '_')}")()
        return Dataset(source, bunch.data.astype(np.float32),
                       [str(n) for n in bunch.feature_names], bunch.target)
    if not Path(source).suffix:
        raise InputError(f"--data {source!r} is neither an embedded data set nor a file; "
                         f"expected one of {', '.join(EMBEDDED)} or a .csv, .parquet or .npy path")
    table = read_table(source)
    names = table.feature_names or [f"f{i}" for i in range(table.x.shape[1])]
    return Dataset(source, table.x, names)


@dataclass
class Split:
    train: np.ndarray  # row indices
    val: np.ndarray  # for early stopping and the anomaly threshold
    held_out: np.ndarray  # kept for `vae evaluate`: normal rows not trained on, and anomalies


def split_dataset(data: Dataset, val_fraction: float, seed: int) -> Split:
    """Train and validation rows; with labels, both are normal rows, and a further share of the
    normal rows (val_fraction) is held out with all the anomalous rows."""
    if data.anomalous is None:
        train, val = split_rows(len(data.x), val_fraction, seed)
        return Split(train, val, np.zeros(0, dtype=np.int64))
    normal = np.flatnonzero(~data.anomalous)
    if len(normal) < 3:
        raise InputError(f"{data.name} has {len(normal)} normal rows; expected at least 3 "
                         f"(train, validation and evaluation)")
    kept, held_out = split_rows(len(normal), val_fraction, seed, stream=1)
    train, val = split_rows(len(kept), val_fraction, seed)
    return Split(normal[kept[train]], normal[kept[val]],
                 np.union1d(normal[held_out], np.flatnonzero(data.anomalous)))


def split_rows(n_rows: int, val_fraction: float, seed: int,
               stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (rest, share), shuffled by (seed, stream); both sides keep at least one row."""
    if n_rows < 2:
        raise InputError(f"the data has {n_rows} row; expected at least 2 (train and validation)")
    order = np.random.default_rng([seed, stream]).permutation(n_rows)
    n_val = min(max(1, round(n_rows * val_fraction)), n_rows - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_normalization(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows; a constant feature keeps std 1."""
    mean = x_train.mean(axis=0, dtype=np.float64)
    std = x_train.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)
