"""Independent pieces of work on worker processes, one per CPU core.

Workers are spawned, not forked: a forked child inherits torch's OpenMP thread pools and can
hang. A spawned worker imports what the function needs (a few seconds), so the pieces should
each take longer than that.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor

import numpy as np
import pandas as pd

__all__ = ["imap_processes", "map_chunks", "map_processes"]


def imap_processes(function: Callable, *iterables: Iterable, workers: int | None = None,
                   executor: Executor | None = None) -> Iterator:
    """:func:`map_processes`, yielding each result, in input order, as soon as it is ready."""
    calls = list(zip(*iterables))
    if executor is not None:
        yield from (executor.map(function, *zip(*calls)) if calls else ())
        return
    workers = min(workers or os.cpu_count() or 1, len(calls))
    if workers <= 1:
        yield from (function(*args) for args in calls)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(function, *zip(*calls))


def map_processes(function: Callable, *iterables: Iterable, workers: int | None = None,
                  executor: Executor | None = None) -> list:
    """``[function(*args) for args in zip(*iterables)]``, on up to ``workers`` spawned processes.

    The results come back in the order of the inputs, so for a function that does not depend
    on which process runs it the result does not depend on ``workers``.

    Arguments:
        function: a module-level function (spawned workers import it by name).
        iterables: its arguments, one iterable per parameter, as for ``map``.
        workers: processes; None takes one per CPU core; 1 (or a single call) runs here.
        executor: any ``concurrent.futures.Executor`` to run the calls instead (e.g. a
            ``dask.distributed`` client's ``get_executor()`` for a cluster); ``workers`` is
            then ignored.

    Example:
        >>> map_processes(pow, [2, 3], [3, 2], workers=1)
        [8, 9]
    """
    return list(imap_processes(function, *iterables, workers=workers, executor=executor))


def map_chunks(function: Callable[..., pd.DataFrame], rows: np.ndarray, *args, workers: int | None = None
               ) -> pd.DataFrame:
    """``function(chunk, *args)`` over chunks of ``rows`` on worker processes, one table.

    For a function that treats each row on its own (one output row per input row), the result
    is ``function(rows, *args)``, whatever ``workers`` is. Each worker gets about four chunks,
    so that a slow chunk does not leave the other cores idle.

    Arguments:
        function: module-level; takes (M, ...) rows and ``args``, returns M table rows.
        rows: (N, ...) array, e.g. images.
        args: the same for every chunk.
        workers: as in :func:`map_processes`.

    Example:
        >>> map_chunks(lambda x, k: pd.DataFrame({"y": x * k}), np.arange(3), 2, workers=1).y.tolist()
        [0, 2, 4]
    """
    workers = workers or os.cpu_count() or 1
    if len(rows) == 0 or workers <= 1:
        return function(rows, *args)
    chunks = np.array_split(rows, min(len(rows), 4 * workers))
    parts = map_processes(function, chunks, *([arg] * len(chunks) for arg in args), workers=workers)
    return pd.concat(parts, ignore_index=True)
