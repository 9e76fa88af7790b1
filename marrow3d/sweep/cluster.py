"""Where sweep members run: a local Dask cluster, a local GPU cluster, or a running scheduler.

* default: ``distributed.LocalCluster`` with ``N`` worker *processes* of one thread each,
  started with the ``spawn`` method (CUDA is not fork-safe; each process initialises its own
  Taichi runtime), listening on the loopback interface only (``127.0.0.1``), no dashboard:
  distributed always starts an HTTP server in the scheduler and each worker, so these serve
  no routes at all and listen on ephemeral loopback ports (not 8787, which another program,
  or a second sweep, may want);
* ``gpus=True``: ``dask_cuda.LocalCUDACluster`` (one worker per visible GPU, each with its
  own ``CUDA_VISIBLE_DEVICES``, so Taichi's device 0 is that worker's GPU);
* ``scheduler="tcp://host:port"``: connect to a scheduler started elsewhere (``dask
  scheduler`` and ``dask worker`` processes); its workers must be able to import marrow3d and
  see the sweep folder at the same path (a shared file system). A member already running on
  such a worker when the sweep command is interrupted runs on to its end: let it finish (or
  restart the workers) before resuming the sweep, or the two attempts share one folder.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator

from .errors import SweepError

__all__ = ["open_client", "DEFAULT_WORKERS", "check_scheduler_address", "check_cluster_options"]

log = logging.getLogger(__name__)

#: Worker processes of a local CPU cluster when ``--workers`` is not given.
DEFAULT_WORKERS = 2
#: The only interface a local cluster listens on.
LOOPBACK = "127.0.0.1"

_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


def check_scheduler_address(address: str) -> str:
    """Return ``address`` if it looks like ``tcp://HOST:PORT``; a one-line error otherwise."""
    m = _ADDRESS.match(address.strip())
    if not m or not 0 < int(m.group(3)) < 65536:
        raise SweepError(f"--scheduler {address!r} must look like tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786)")
    return address.strip()


def _import_distributed():
    try:
        import dask
        import distributed
    except ImportError:
        raise SweepError(
            "sweeps need the package `dask[distributed]`; install it with "
            "pip install 'marrow3d[distributed]' (or pip install 'dask[distributed]')"
        ) from None
    return dask, distributed


def check_cluster_options(*, workers: int | None = None, scheduler: str | None = None, gpus: bool = False) -> None:
    """Fail early (before anything is written) on options that cannot work here."""
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    _import_distributed()
    if scheduler is not None:
        check_scheduler_address(scheduler)
    elif gpus:
        _import_dask_cuda()


def _import_dask_cuda():
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise SweepError(
            "--gpus needs the package `dask-cuda` (not installed); install the release built "
            "for your dask version, e.g. pip install dask-cuda"
        ) from None
    return LocalCUDACluster


@contextlib.contextmanager
def open_client(*, workers: int | None = None, scheduler: str | None = None, gpus: bool = False,
                connect_timeout_s: float = 30.0) -> Iterator[tuple[object, str]]:
    """Yield ``(distributed.Client, description)``; closes what it started on exit.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a local cluster (default :data:`DEFAULT_WORKERS`; with ``gpus``,
        one per visible GPU). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running Dask scheduler; nothing is started locally.
    gpus : bool
        Start a ``dask_cuda.LocalCUDACluster`` (needs the package ``dask-cuda``).
    connect_timeout_s : float
        How long to wait for a remote scheduler and for its first worker.

    Raises
    ------
    SweepError
        Missing package, bad or unreachable scheduler address, scheduler without workers.
    """
    if workers is not None and workers < 1:
        raise SweepError(f"--workers must be >= 1, got {workers}")
    dask, distributed = _import_distributed()
    with contextlib.ExitStack() as stack:
        if scheduler is not None:
            address = check_scheduler_address(scheduler)
            if gpus:
                log.warning("--gpus is ignored with --scheduler: the scheduler's workers are what they are")
            try:
                client = distributed.Client(address, timeout=connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                why = " ".join(str(exc).split())
                raise SweepError(f"cannot reach the Dask scheduler at {address} ({why})") from None
            stack.callback(client.close)
            try:
                client.wait_for_workers(1, timeout=connect_timeout_s)
            except (TimeoutError, OSError):
                raise SweepError(
                    f"the Dask scheduler at {address} has no workers after {connect_timeout_s:g} s; "
                    f"start some with `dask worker {address}`"
                ) from None
            n = len(client.scheduler_info().get("workers", {}))
            yield client, f"scheduler {address} ({n} worker{'s' if n != 1 else ''})"
            return

        # Worker processes are spawned, never forked (CUDA and Taichi's runtime are not fork-safe).
        # No dashboard and no HTTP routes: the HTTP servers distributed always starts serve
        # nothing, on ephemeral loopback ports.
        stack.enter_context(dask.config.set({
            "distributed.worker.multiprocessing-method": "spawn",
            "distributed.scheduler.http.routes": [],
            "distributed.worker.http.routes": [],
        }))
        common = dict(threads_per_worker=1, host=LOOPBACK, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": f"{LOOPBACK}:0", "dashboard": False},
                      silence_logs=logging.WARNING)
        if gpus:
            LocalCUDACluster = _import_dask_cuda()
            kwargs = dict(common)
            if workers is not None:
                kwargs["n_workers"] = workers
            cluster = stack.enter_context(LocalCUDACluster(**kwargs))
            what = "local GPU cluster"
        else:
            cluster = stack.enter_context(
                distributed.LocalCluster(n_workers=workers or DEFAULT_WORKERS, processes=True, **common)
            )
            what = "local cluster"
        client = stack.enter_context(distributed.Client(cluster))
        n = len(cluster.workers)
        yield client, f"{what}, {n} worker process{'es' if n != 1 else ''}"
