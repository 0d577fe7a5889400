"""Training data: scikit-learn's embedded data sets or a file, its columns decided
(serving.tables.infer), split and normalized."""

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError
from serving.core.schema import Schema
from serving.tables.infer import infer_schema
from serving.tables.labels import DEFAULT_NORMAL_VALUE, read_labelled, split_labels
from serving.tables.read import existing_table, open_npy, read_arrow

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
    schema: Schema | None = None  # set by load_dataset for every source
    table: pa.Table | None = None  # a file's columns as read (held-out rows are written from it)
    notes: list[str] = field(default_factory=list)  # what was decided about the columns


def in_memory(data) -> pa.Table | np.ndarray | None:
    """Training rows passed as objects rather than named (a pandas DataFrame, a pyarrow table,
    a 2-D array), as a pyarrow table or an array; None for a name or a path."""
    if isinstance(data, (str, os.PathLike)):
        return None
    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "iloc"):
        return pa.Table.from_pandas(data, preserve_index=False)
    array = np.asarray(data)
    if array.ndim != 2 or array.dtype.kind not in "fiub":
        raise InputError(f"the training rows are a {type(data).__name__} of shape "
                         f"{list(array.shape)}; expected a 2-D numeric array, a DataFrame or "
                         f"a pyarrow table")
    return array


def table_dataset(data, label_column: str | None = None, normal_value: str | None = None,
                  numeric=(), categorical=(), ignore=()) -> Dataset:
    """A Dataset of rows in memory (training.in_memory's kinds): an array's columns are
    numeric (f0, f1, ...); a table's are decided as a file's are."""
    rows = in_memory(data)
    if isinstance(rows, np.ndarray):
        if label_column is not None or numeric or categorical or ignore:
            raise InputError("an array has no column names: pass a DataFrame to use "
                             "label_column, numeric, categorical or ignore")
        names = [f"f{i}" for i in range(rows.shape[1])]
        data = Dataset("array", rows.astype(np.float32), names, schema=Schema.numeric(names))
    else:
        data = _file_table(rows, "the table", label_column, normal_value, numeric, categorical,
                           ignore)
    _check_cells(data)
    return data


def load_dataset(source: str, label_column: str | None = None, normal_value: str | None = None,
                 numeric=(), categorical=(), ignore=()) -> Dataset:
    """`digits`, `breast-cancer`, `wine`, `iris`, or a path to a .csv, .parquet or .npy file
    or a directory of .parquet files (which may have a label column saying which rows are
    normal; a table over training.stream.STREAM_ROWS rows is streamed instead). A file's columns are
    decided by serving.tables.infer, with the flags' overrides; every row must have an
    observed cell."""
    if Path(source).is_dir():  # a directory of .parquet files, small enough to read whole
        data = _file_table(_parquet_directory(Path(source)), source, label_column, normal_value,
                           numeric, categorical, ignore)
        _check_cells(data)
        return data
    if source in EMBEDDED or not Path(source).suffix:
        if label_column is not None:
            raise InputError(f"--label-column needs a .csv, .parquet or .npy file as --data, "
                             f"not {source!r}")
        if numeric or categorical or ignore:
            raise InputError(f"--numeric, --categorical and --ignore are for a .csv or .parquet "
                             f"file as --data, not {source!r}")
        data = _embedded(source)
        data.schema = Schema.numeric(data.feature_names)
        return data
    path, suffix = existing_table(source)
    if suffix == ".npy":
        if numeric or categorical or ignore:
            raise InputError(f"{source} is a .npy array, whose columns are all numeric; "
                             f"--numeric, --categorical and --ignore need a .csv or .parquet file")
        if label_column is not None:
            labelled = read_labelled(source, label_column, normal_value, allow_missing=True)
            x, labels, anomalous = labelled.x, labelled.labels, labelled.anomalous
        else:
            x, labels, anomalous = np.asarray(open_npy(path), np.float32), None, None
        names = [f"f{i}" for i in range(x.shape[1])]
        data = Dataset(source, x, names, label_column=label_column, label_values=labels,
                       anomalous=anomalous, schema=Schema.numeric(names))
    else:
        data = _file(path, suffix, label_column, normal_value, numeric, categorical, ignore)
    _check_cells(data)
    return data


def _parquet_directory(path: Path) -> pa.Table:
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise InputError(f"{path} is a directory without .parquet files; expected a directory "
                         f"of .parquet files or one .csv, .parquet or .npy file")
    tables = [read_arrow(f, ".parquet") for f in files]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowInvalid as e:
        raise InputError(f"{path}: its .parquet files do not share their columns ({e})") from None


def _file(path: Path, suffix: str, label_column: str | None, normal_value: str | None,
          numeric, categorical, ignore) -> Dataset:
    return _file_table(read_arrow(path, suffix), path, label_column, normal_value, numeric,
                       categorical, ignore)


def _file_table(table: pa.Table, path, label_column: str | None, normal_value: str | None,
                numeric, categorical, ignore) -> Dataset:
    if table.num_rows == 0:
        raise InputError(f"{path} has no rows; expected at least two rows to train on")
    labels = anomalous = None
    features = table
    if label_column is not None:
        value = DEFAULT_NORMAL_VALUE if normal_value is None else normal_value
        features, labels, anomalous = split_labels(table, label_column, value, path)
    schema, notes = infer_schema(features, numeric, categorical, ignore, where=str(path))
    if label_column is not None:  # rows to score may carry it: it passes through
        schema.ignored[label_column] = "the label column (--label-column)"
    x = schema.from_arrow(features, str(path))
    return Dataset(str(path), x, schema.names, label_column=label_column, label_values=labels,
                   anomalous=anomalous, schema=schema, table=table, notes=notes)


def _check_cells(data: Dataset) -> None:
    """Missing cells are fine (NaN); infinities and rows with no observed cell are not."""
    infinite = np.argwhere(np.isinf(data.x))
    if len(infinite):
        r, c = infinite[0]
        raise InputError(f"{data.name}: row {r}, column {data.feature_names[c]!r} is infinite; "
                         f"expected finite numbers or missing cells")
    empty = np.flatnonzero(np.isnan(data.x).all(axis=1))
    if len(empty):
        raise InputError(f"{data.name}: row {empty[0]} has no observed cell in the model's "
                         f"columns ({len(empty)} such rows); expected at least one value per "
                         f"row")


def _embedded(source: str) -> Dataset:
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
    raise InputError(f"--data {source!r} is neither an embedded data set nor a file; "
                     f"expected one of {', '.join(EMBEDDED)} or a .csv, .parquet or .npy path")


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
        raise InputError(f"the data has {n_rows} row (n_samples = {n_rows}); expected at least 2 "
                         f"(train and validation)")
    order = np.random.default_rng([seed, stream]).permutation(n_rows)
    n_val = min(max(1, round(n_rows * val_fraction)), n_rows - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fit_normalization(x_train: np.ndarray,
                      schema: Schema | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of the training rows' observed cells; a constant (or never
    observed) feature keeps std 1, and a categorical column mean 0 and std 1."""
    if np.isnan(x_train).any():
        observed = ~np.isnan(x_train)
        count = np.maximum(observed.sum(axis=0), 1)
        filled = np.where(observed, x_train, 0.0).astype(np.float64)
        mean = filled.sum(axis=0) / count
        std = np.sqrt((np.where(observed, x_train - mean, 0.0) ** 2).sum(axis=0) / count)
    else:
        mean = x_train.mean(axis=0, dtype=np.float64)
        std = x_train.std(axis=0, dtype=np.float64)
    return normalization(mean, std, schema)


def integer_cells(x: np.ndarray) -> np.ndarray:
    """Per column of rows x, whether every observed cell holds an integer (a column with no
    observed cell counts as one)."""
    return np.all(np.isnan(x) | (x == np.round(x)), axis=0)


def normalization(mean: np.ndarray, std: np.ndarray,
                  schema: Schema | None) -> tuple[np.ndarray, np.ndarray]:
    """The stored shift and scale of float64 statistics: a constant feature keeps std 1, and a
    categorical column mean 0 and std 1."""
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    if schema is not None:
        mean[schema.categorical_index], std[schema.categorical_index] = 0.0, 1.0
    return mean.astype(np.float32), std.astype(np.float32)
