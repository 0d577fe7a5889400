"""Training rows read from disk as the run goes: a Parquet table larger than STREAM_ROWS rows (one
file, or a directory of them) is never held in memory.

- Its columns are decided (serving.tables.infer) on a sample: SAMPLE_ROWS rows from whole row
  groups picked by the seed.
- The validation rows are a fixed sample chosen by the seed: val_fraction of the rows, at most
  VAL_ROWS. They are the only rows held.
- The normalisation (each feature's mean and std over the training rows' observed cells) comes
  from one streaming pass, which also refuses an infinite cell or an empty row by its number.
  Each cell enters it clipped to the sample's CLIP_QUANTILE and 1 - CLIP_QUANTILE quantiles
  of its column, so that one cell among millions cannot set a column's scale (in
  bench/train_scale.py's table, one Student-t cell of 117,001 among 2M rows nearly doubled its
  column's std, and the model's loss was 1.8% worse for it). A table read whole keeps the plain
  std, with which the quality report's defaults were chosen.
- Epoch e reads from row e·epoch_rows of the row groups' order in pass p (a permutation seeded
  by (seed, p)), through a shuffle buffer of BUFFER_BYTES: each batch is a seeded draw of the
  buffer's rows, whose places the stream then refills. An epoch depends on (seed, epoch) only,
  so a resumed run reads exactly what the first would have.

Batches mix the rows of one or two row groups at a time: a table sorted by a column (time, say)
trains on less varied batches than one whose rows were written in random order.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from serving.core.rows import InputError
from serving.core.schema import Schema
from serving.tables.infer import infer_schema
from serving.tables.read import arrow_error
from training.data import integer_cells, normalization

STREAM_ROWS = 1_000_000  # a Parquet table with more rows is streamed
SAMPLE_ROWS = 100_000  # rows the column decisions are made on
VAL_ROWS = 50_000  # at most this many validation rows
CLIP_QUANTILE = 1e-4  # the statistics' cells are clipped to the sample's quantiles 1e-4, 1 - 1e-4
BUFFER_BYTES = 64 << 20  # the shuffle buffer's rows, in float32 cells
READ_ROWS = 65_536  # rows read at a time from a row group


@dataclass(frozen=True)
class Part:
    """One row group of one file, and the number of its first row in the whole table."""
    path: Path
    group: int
    rows: int
    first: int


@dataclass
class StreamedTable:
    path: Path
    parts: list[Part]
    schema: Schema
    notes: list[str]
    val_index: np.ndarray  # sorted row numbers of the validation rows
    n_rows: int
    stats: dict = field(default_factory=dict)  # filled by read_validation_and_stats
    clip: tuple[np.ndarray, np.ndarray] | None = None  # (low, high) per feature, from the sample

    @property
    def n_train(self) -> int:
        return self.n_rows - len(self.val_index)


def parquet_parts(path: str | Path) -> list[Part] | None:
    """The row groups of a .parquet file or of a directory's .parquet files (in name order);
    None for anything else."""
    from pyarrow import parquet

    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else \
        [path] if path.suffix.lower() == ".parquet" and path.is_file() else []
    parts, first = [], 0
    for file in files:
        try:
            metadata = parquet.ParquetFile(file).metadata
        except (pa.ArrowInvalid, OSError) as e:
            raise arrow_error(file, ".parquet", e) from None
        for group in range(metadata.num_row_groups):
            rows = metadata.row_group(group).num_rows
            parts.append(Part(file, group, rows, first))
            first += rows
    return parts or None


def open_streamed(path: str | Path, seed: int, val_fraction: float, label_column: str | None,
                  normal_value: str | None = None, numeric=(), categorical=(),
                  ignore=()) -> StreamedTable | None:
    """The table at path to stream, or None when it is small enough to read whole (or is not
    Parquet)."""
    parts = parquet_parts(path)
    n_rows = sum(p.rows for p in parts) if parts else 0
    if n_rows <= STREAM_ROWS:
        return None
    if label_column is not None:
        raise InputError(f"{path} has {n_rows} rows, more than the {STREAM_ROWS} read whole; "
                         f"a streamed table trains on all its rows, so --label-column is not "
                         f"taken: filter the normal rows into their own files")
    rng = np.random.default_rng([seed, 3])
    sample, taken = [], 0
    for i in rng.permutation(len(parts)):
        sample.append(_read_group(parts[i]))
        taken += parts[i].rows
        if taken >= SAMPLE_ROWS:
            break
    table = pa.concat_tables(sample, promote_options="permissive")
    schema, notes = infer_schema(table, numeric, categorical, ignore, where=str(path))
    notes.append(f"{n_rows} rows, streamed: the columns were decided on {table.num_rows} rows "
                 f"of {len(sample)} row groups")
    n_val = min(max(1, round(n_rows * val_fraction)), VAL_ROWS)
    val_index = np.sort(np.random.default_rng([seed, 4]).choice(n_rows, n_val, replace=False))
    with np.errstate(all="ignore"):  # an all-missing column's quantiles are NaN: no clipping
        sample = schema.from_arrow(table, str(path)).astype(np.float64)
        clip = (np.nanquantile(sample, CLIP_QUANTILE, axis=0),
                np.nanquantile(sample, 1 - CLIP_QUANTILE, axis=0))
    return StreamedTable(Path(path), parts, schema, notes, val_index, n_rows, clip=clip)


def _read_group(part: Part, columns: list[str] | None = None) -> pa.Table:
    from pyarrow import parquet
    try:
        return parquet.ParquetFile(part.path, pre_buffer=False).read_row_group(part.group,
                                                                              columns)
    except (pa.ArrowException, OSError) as e:
        raise arrow_error(part.path, ".parquet", e) from None


def matrices(table: StreamedTable, part: Part, skip: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(row number of the first row, the model's matrix) of a row group's rows from `skip` on,
    READ_ROWS at a time. pre_buffer off: pyarrow would keep every row group read alive."""
    from pyarrow import parquet
    try:
        reader = parquet.ParquetFile(part.path, pre_buffer=False)
        first = part.first
        for batch in reader.iter_batches(batch_size=READ_ROWS, row_groups=[part.group],
                                         columns=table.schema.names):
            if first + batch.num_rows > part.first + skip:
                cut = max(0, part.first + skip - first)
                rows = pa.Table.from_batches([batch.slice(cut)])
                yield first + cut, table.schema.from_arrow(rows, str(part.path), first + cut)
            first += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise arrow_error(part.path, ".parquet", e) from None


def training_rows(table: StreamedTable, first: int, x: np.ndarray) -> np.ndarray:
    """The rows of x (numbered first, first+1, ...) that are not validation rows."""
    lo, hi = np.searchsorted(table.val_index, [first, first + len(x)])
    if lo == hi:
        return x
    keep = np.ones(len(x), bool)
    keep[table.val_index[lo:hi] - first] = False
    return x[keep]


def read_validation_and_stats(table: StreamedTable) -> np.ndarray:
    """One pass over the table: the validation rows (returned), and into table.stats each
    feature's mean and std over the training rows' observed cells, whether they are all
    integers, and whether a cell is missing anywhere. Chunks' sums are merged in float64
    (Chan et al.'s pairwise update)."""
    width = len(table.schema.names)
    count, mean, m2 = np.zeros(width), np.zeros(width), np.zeros(width)
    val, missing, integer = [], False, np.ones(width, bool)
    for part in table.parts:
        for first, x in matrices(table, part):
            lo, hi = np.searchsorted(table.val_index, [first, first + len(x)])
            val.append(x[table.val_index[lo:hi] - first])
            rows = training_rows(table, first, x)
            observed = ~np.isnan(rows)
            integer &= integer_cells(rows)
            if table.clip is not None:  # NaN bounds (no sample cell) clip nothing
                rows = np.clip(rows, np.nan_to_num(table.clip[0], nan=-np.inf),
                               np.nan_to_num(table.clip[1], nan=np.inf))
            missing = missing or not observed.all()
            n = observed.sum(axis=0)
            filled = np.where(observed, rows, 0.0).astype(np.float64)
            chunk_mean = filled.sum(axis=0) / np.maximum(n, 1)
            chunk_m2 = (np.where(observed, rows - chunk_mean, 0.0) ** 2).sum(axis=0)
            total = count + n
            delta = chunk_mean - mean
            mean = mean + delta * n / np.maximum(total, 1)
            m2 = m2 + chunk_m2 + delta**2 * count * n / np.maximum(total, 1)
            count = total
    shift, scale = normalization(mean, np.sqrt(m2 / np.maximum(count, 1)), table.schema)
    table.stats = {"mean": shift, "std": scale, "missing": missing, "integer": integer}
    return np.concatenate(val)


def epoch_batches(table: StreamedTable, seed: int, epoch: int, epoch_rows: int,
                  batch_size: int) -> Iterator[np.ndarray]:
    """The training batches of epoch `epoch`, as many as make up epoch_rows, drawn through the
    shuffle buffer."""
    rng = np.random.default_rng([seed, 5, epoch])
    width = len(table.schema.names)
    capacity = int(min(max(BUFFER_BYTES // (4 * width), 8 * batch_size), epoch_rows))
    stream = RowStream(table, seed, epoch * epoch_rows)
    try:
        buffer = stream.take(capacity)
        for _ in range(-(-epoch_rows // batch_size)):
            picked = rng.choice(len(buffer), min(batch_size, len(buffer)), replace=False)
            yield buffer[picked]
            buffer[picked] = stream.take(len(picked))
    finally:  # the open reader and its row group go now, not when the collector runs
        stream.chunks.close()


class RowStream:
    """Training rows from `position` on (every row counted, over whole passes, each pass's
    row groups in an order seeded by (seed, pass)), endless, taken n at a time."""

    def __init__(self, table: StreamedTable, seed: int, position: int):
        self.chunks = _chunks(table, seed, *divmod(position, table.n_rows))
        self.held = np.empty((0, len(table.schema.names)), np.float32)

    def take(self, n: int) -> np.ndarray:
        parts, have = [self.held], len(self.held)
        while have < n:
            chunk = next(self.chunks)
            parts.append(chunk)
            have += len(chunk)
        rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self.held = rows[n:]
        return rows[:n].copy()


def _chunks(table: StreamedTable, seed: int, pass_: int, offset: int) -> Iterator[np.ndarray]:
    while True:
        for i in np.random.default_rng([seed, 6, pass_]).permutation(len(table.parts)):
            part = table.parts[i]
            if offset >= part.rows:
                offset -= part.rows
                continue
            for first, x in matrices(table, part, offset):
                yield training_rows(table, first, x)
            offset = 0
        pass_ += 1
