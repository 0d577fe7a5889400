"""The file endpoint's pipeline: an upload's chunks scored on the graph thread and written by a
writer thread as they come, so that no more than a few chunks' scores are held at once."""

import asyncio
import contextlib
import queue
from pathlib import Path

import bentoml

from serving.core.rows import InputError
from serving.jobs.chunk import score_chunk
from serving.tables.sources import chunks
from serving.tables.write import write_table


def _until_done(scored: queue.Queue):
    """The tables put on the queue, until None; an exception put there is raised (so that the
    writer keeps nothing of a failed upload)."""
    while (table := scored.get()) is not None:
        if isinstance(table, BaseException):
            raise table
        yield table


def too_many_rows(source, limit: int, rows: int | None = None) -> InputError:
    count = f"{rows} rows" if rows is not None else f"more than {limit} rows"
    return InputError(f"{source.path} has {count}; at most {limit} are accepted per upload "
                      f"(score larger files with `vae score`)")


async def score_upload(service, source, n_samples: int, seed: int, request, out: Path) -> None:
    """Every chunk of an upload through the job step, read and scored on graph_thread
    (other requests run between chunks), each at most VAE_MAX_ROW_SAMPLES row-samples,
    the whole at most VAE_MAX_FILE_ROWS rows, and handed to a writer thread as it comes:
    no more than a few chunks' scores are held at once. A client that went away stops
    the work, and a failed upload leaves no output."""
    settings = service.settings
    if source.rows is not None and source.rows > settings.max_file_rows:  # from the metadata
        raise too_many_rows(source, settings.max_file_rows, source.rows)
    chunk = max(1, min(settings.file_chunk_rows, settings.max_row_samples // n_samples))
    rows_of = chunks(source, chunk)
    scored: queue.Queue = queue.Queue()
    writer = asyncio.get_running_loop().run_in_executor(
        None, write_table, _until_done(scored), out, source.rows)
    first = -1
    try:
        while (item := await service._on_graph_thread(next, rows_of, None)) is not None:
            first, rows, passthrough = item
            if first + len(rows) > settings.max_file_rows:  # a CSV, counted as it is read
                raise too_many_rows(source, settings.max_file_rows)
            table = await service._on_graph_thread(score_chunk, service.runtime, first, rows,
                                                passthrough, n_samples, seed, False,
                                                service._observe_drift)
            service._count("anomaly_score_file", table.num_rows,
                        table["is_anomaly"].to_numpy(zero_copy_only=False),
                        table["score"].to_numpy())
            scored.put(table)
            if await request.is_disconnected():
                raise bentoml.exceptions.BadInput("the client went away; the upload's "
                                                  "scoring stopped")
            del table, rows, item, passthrough
        if first < 0:
            raise InputError(f"{source.path} has no rows; expected at least one row to "
                             f"score")
    except BaseException as e:
        scored.put(e)  # the writer drops its partial file
        with contextlib.suppress(BaseException):
            await writer
        raise
    scored.put(None)
    await writer
