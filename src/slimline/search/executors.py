"""Where trials run: ``local`` (worker processes on this machine) or ``dask`` (tasks on an existing cluster).

An executor's ``submit(params, spec)`` returns a future with ``result()``. Add one: a class here and a line in
``EXECUTORS``.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Protocol

from slimline.errors import SlimlineError
from slimline.search.trial import run_trial


class Executor(Protocol):
    def submit(self, params: dict[str, Any], spec: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


class LocalExecutor:
    """``workers`` spawned processes on this machine; a process that dies fails its trial and the pool restarts."""

    def __init__(self, workers: int = 1, scheduler: str | None = None, retries: int = 1) -> None:
        if scheduler:
            raise SlimlineError("--scheduler is for --executor dask; leave it out with --executor local")
        self.workers = workers
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))

    def submit(self, params: dict[str, Any], spec: dict[str, Any]) -> Future[dict[str, Any]]:
        try:
            return self._pool.submit(run_trial, params, spec)
        except BrokenProcessPool:
            self._pool.shutdown(cancel_futures=True)
            self._pool = self._new()
            return self._pool.submit(run_trial, params, spec)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


class DaskExecutor:
    """Trials as Dask distributed tasks on the cluster at ``scheduler`` (``tcp://127.0.0.1:8786``).

    A worker that dies mid-trial costs that attempt only: the scheduler runs the task again on another worker,
    and ``retries`` more times when the trial itself raises.
    """

    def __init__(self, workers: int = 1, scheduler: str | None = None, retries: int = 1) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise SlimlineError("--executor dask needs the distributed package: pip install 'slimline[dist]'") from None
        if not scheduler:
            raise SlimlineError("--executor dask needs --scheduler tcp://HOST:PORT of a running Dask scheduler")
        try:
            self._client = Client(scheduler, timeout=30, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise SlimlineError(
                f"cannot reach the Dask scheduler at {scheduler} ({e}); start it (dask scheduler) or fix --scheduler"
            ) from None
        self.retries = retries

    def submit(self, params: dict[str, Any], spec: dict[str, Any]) -> Any:
        return self._client.submit(run_trial, params, spec, pure=False, retries=self.retries)

    def close(self) -> None:
        self._client.close()


EXECUTORS: dict[str, type[LocalExecutor] | type[DaskExecutor]] = {"local": LocalExecutor, "dask": DaskExecutor}


def get_executor(name: str, workers: int, scheduler: str | None, retries: int) -> Executor:
    """The executor ``name`` (one of :data:`EXECUTORS`), started."""
    if name not in EXECUTORS:
        raise SlimlineError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name](workers, scheduler, retries)
