"""The training rows of a run, ready for the loop: read whole, or streamed when too large
(training.stream); split into training and validation rows; the normalisation fitted; and the
batches of each epoch. The one-process loop (training.train) and Ray Train
(training.ray_train) start from the same."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from training.config import TrainConfig
from training.data import (Dataset, Split, fit_normalization, integer_cells, load_dataset,
                           split_dataset, table_dataset)
from training.stream import StreamedTable, epoch_batches, open_streamed, read_validation_and_stats


@dataclass
class Prepared:
    data: Dataset  # with a streamed table: its validation rows only
    split: Split
    n_train: int
    mean: np.ndarray
    std: np.ndarray
    missing: bool  # whether a training cell is missing (the encoder then sees the mask)
    integer: np.ndarray  # per column, whether its training cells are all integers
    streamed: StreamedTable | None = None

    @property
    def x_val(self) -> np.ndarray:
        return self.data.x[self.split.val]

    def x_train(self) -> np.ndarray:
        """The training rows of a table read whole."""
        return self.data.x[self.split.train]


def prepare(config: TrainConfig, rows=None) -> Prepared:
    """The run's rows: config.data, or `rows` held in memory (a DataFrame, a table, an
    array)."""
    options = (config.label_column, config.normal_value, config.numeric, config.categorical,
               config.ignore)
    streamed = None if rows is not None else \
        open_streamed(config.data, config.seed, config.val_fraction, *options)
    if streamed is not None:
        x_val = read_validation_and_stats(streamed)
        data = Dataset(config.data, x_val, streamed.schema.names, schema=streamed.schema,
                       notes=streamed.notes)
        split = Split(np.zeros(0, np.int64), np.arange(len(x_val)), np.zeros(0, np.int64))
        return Prepared(data, split, streamed.n_train, streamed.stats["mean"],
                        streamed.stats["std"], streamed.stats["missing"],
                        streamed.stats["integer"], streamed)
    data = load_dataset(config.data, *options) if rows is None else table_dataset(rows, *options)
    split = split_dataset(data, config.val_fraction, config.seed)
    mean, std = fit_normalization(data.x[split.train], data.schema)
    return Prepared(data, split, len(split.train), mean, std, bool(np.isnan(data.x).any()),
                    integer_cells(data.x[split.train]))


Batches = Callable[[torch.Generator, int], Iterator[torch.Tensor]]


def epoch_rows(config: TrainConfig, n_train: int) -> int:
    """Rows per epoch: the chosen sample of a large table, else every training row."""
    return min(config.epoch_rows or n_train, n_train)


def batches_of(prepared: Prepared, config: TrainConfig) -> Batches:
    """batches(generator, epoch): the epoch's training batches. Read whole, a permutation
    drawn from the epoch's generator; streamed, training.stream's shuffle buffer."""
    if prepared.streamed is not None:
        def streamed(generator: torch.Generator, epoch: int) -> Iterator[torch.Tensor]:
            for batch in epoch_batches(prepared.streamed, config.seed, epoch,
                                       epoch_rows(config, prepared.n_train), config.batch_size):
                yield torch.from_numpy(batch)
        return streamed
    return rows_in_memory(torch.from_numpy(prepared.x_train()), config.batch_size,
                          epoch_rows(config, prepared.n_train))


def rows_in_memory(x_train: torch.Tensor, batch_size: int, rows: int) -> Batches:
    """Batches of `rows` rows of x_train per epoch, in an order drawn from the epoch's
    generator."""
    def batches(generator: torch.Generator, epoch: int) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, rows, batch_size):
            yield x_train[order[start:start + batch_size]]
    return batches
