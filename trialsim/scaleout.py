"""Running independent tasks on local processes or on a Dask distributed cluster.

Both paths yield ``(index, result)`` pairs as tasks finish, so callers can record
results as they arrive; results never depend on which worker ran what.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import select
import signal
import sys
import threading
import time
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


# seconds a stopping worker has to unwind its task (finally blocks remove temporary files and folders)
GRACE_S = 3.0
_stopping = False
_in_task = False


def _worker_start(parent_pid: int) -> None:
    """Initializer of a worker process: one math thread, and a life no longer than its parent's.

    ``parent_pid``: the process that runs the pool (the worker's own parent is the forkserver).
    """
    # first, before the slow imports below: Ctrl-C reaches the whole process group, and the parent
    # stops the workers, so they leave it to it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _unwind)
    _signal_on_parent_death(signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="trialsim-watch-parent").start()
    _single_thread_worker()


def _unwind(signum: int, frame) -> None:
    """SIGTERM in a worker: unwind the running task (its cleanup runs) and take no further one."""
    global _stopping
    _stopping = True
    if not _in_task:  # idle or still starting: nothing to clean up
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _run_task(fn: Callable, arg):
    global _in_task
    if _stopping:  # a task queued before the stop: leave it undone, and this process
        os._exit(128 + signal.SIGTERM)
    _in_task = True
    try:
        return fn(arg)
    finally:
        _in_task = False


def _signal_on_parent_death(signum: int) -> None:
    """Linux: have the kernel send ``signum`` when this process's parent dies (no thread needed)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl: the watch thread alone
        pass


_PR_SET_PDEATHSIG = 1


def _watch_parent(pid: int) -> None:
    """Wait for process ``pid`` to end, then stop this worker (SIGTERM to itself, then exit)."""
    try:
        fd = os.pidfd_open(pid)  # Linux ≥ 5.3: readable when the process ends, immune to pid reuse
    except ProcessLookupError:
        fd = None
    except (AttributeError, OSError):
        fd = -1
    if fd is not None and fd >= 0:
        select.select([fd], [], [])
    elif fd == -1:
        while _alive(pid):
            time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(128 + signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and stop the workers: SIGTERM, :data:`GRACE_S` to unwind, then SIGKILL."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)


def unwind_on_sigterm() -> None:
    """SIGTERM (``kill``, a batch system's time limit) unwinds like Ctrl-C: the cleanup of temporary files,
    work folders and worker processes runs, then exit 143."""

    def stop(signum, frame):
        print("trialsim: stopped by SIGTERM (rerun with --resume to finish where it applies)", file=sys.stderr)
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def run_local(fn: Callable, args: list, workers: int) -> Iterator[tuple[int, object]]:
    """Yield ``(i, fn(args[i]))`` as tasks finish, on ``workers`` processes (in-process for 1).

    The processes start fresh (forkserver, else spawn), so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard. No worker outlives the run: an error, Ctrl-C, SIGTERM or
    the caller stopping early stops them (after :data:`GRACE_S` seconds to clean up), and a worker
    whose parent was killed stops itself.
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
    pool = ProcessPoolExecutor(
        max_workers=workers, initializer=_worker_start, initargs=(os.getpid(),), mp_context=context
    )
    try:
        futures = {pool.submit(_run_task, fn, a): i for i, a in enumerate(args)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    except BaseException:
        _stop_workers(pool)
        raise
    pool.shutdown(wait=True)


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
