"""Running independent tasks on local processes or on a Dask distributed cluster.

Both paths yield ``(index, result)`` pairs as tasks finish, so callers can record
results as they arrive; results never depend on which worker ran what.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

from .errors import BadInput


def _single_thread_worker() -> None:
    # one task per core: keep each process's math libraries to one thread
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass


def run_local(fn: Callable, args: list, workers: int) -> Iterator[tuple[int, object]]:
    """Yield ``(i, fn(args[i]))`` as tasks finish, on ``workers`` processes (in-process for 1).

    The processes start fresh (forkserver, else spawn), so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    if workers <= 1:
        for i, a in enumerate(args):
            yield i, fn(a)
        return
    # fresh processes, not forks: a fork copies the parent's thread pools (OpenCV's, OpenMP's) in a
    # broken state, and a worker that then uses one waits forever
    context = multiprocessing.get_context(
        "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with ProcessPoolExecutor(max_workers=workers, initializer=_single_thread_worker, mp_context=context) as pool:
        futures = {pool.submit(fn, a): i for i, a in enumerate(args)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def connect(address: str):
    """A Dask client for ``address`` (tcp://HOST:PORT), or BadInput saying what failed."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        raise BadInput("the dask[distributed] package is needed for --scheduler", field="--scheduler") from None
    try:
        return Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise BadInput(
            f"cannot reach the Dask scheduler at {address} ({e.__class__.__name__}: {e})",
            field="--scheduler",
            allowed="the address a running `dask scheduler` prints, e.g. tcp://10.0.0.5:8786",
        ) from None


def run_on_cluster(fn: Callable, args: list, client, retries: int = 2) -> Iterator[tuple[int, object]]:
    """Yield ``(i, fn(args[i]))`` as tasks finish on the Dask cluster of ``client`` (see :func:`connect`).

    A task whose worker is lost is rerun by the scheduler (``retries`` times), so a
    lost worker costs only its unfinished tasks.
    """
    from distributed import as_completed as dask_as_completed

    futures = client.map(fn, args, pure=False, retries=retries)
    index = {f.key: i for i, f in enumerate(futures)}
    for fut in dask_as_completed(futures):
        yield index[fut.key], fut.result()


def map_ordered(tasks: Iterable[tuple[int, object]], n: int, progress: bool = False, desc: str = "") -> list:
    """Collect ``(i, result)`` pairs arriving in any order into a list in input order."""
    out: list = [None] * n
    if progress:
        from tqdm.auto import tqdm

        tasks = tqdm(tasks, total=n, desc=desc)
    for i, r in tasks:
        out[i] = r
    return out
