"""``slimline optimize --executor dask``: on a LocalCluster bound to 127.0.0.1 (2 worker processes) the search asks
the same trials as the local executor with the same seed, and no socket of this process or its children is bound
to or connected with a non-loopback address while it runs (sampled every 0.5 s)."""

from __future__ import annotations

import ipaddress
import threading
from pathlib import Path

import pytest

from slimline.search import run_search

pytest.importorskip("optuna")

from tests import test_search as shared  # noqa: E402 - the local search tests' data, settings and trained model
from tests.test_search import DATA, FAST, _records  # noqa: E402

from slimline.artifact import Artifact  # noqa: E402

trained = shared.trained  # the same module-scoped fixture: small_cnn trained briefly on digits


def _non_loopback_sockets(pids: list[int]) -> list[str]:
    import psutil

    bad = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            for addr in (c.laddr, c.raddr):
                if addr and not ipaddress.ip_address(addr.ip).is_loopback:
                    bad.append(f"pid {pid}: {c}")
    return bad


def test_dask_local_cluster_runs_the_same_trials_on_loopback(trained: Artifact, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")
    local = run_search(trained.path, DATA, tmp_path / "local", trials=3, parallel=2, **FAST)
    bad: list[str] = []
    done = threading.Event()

    def sample() -> None:  # every socket of this process and its children, sampled through the search
        me = psutil.Process()
        while not done.wait(0.5):
            bad.extend(_non_loopback_sockets([me.pid, *(p.pid for p in me.children(recursive=True))]))

    with distributed.LocalCluster(
        host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            dask = run_search(
                trained.path,
                DATA,
                tmp_path / "dask",
                trials=3,
                parallel=2,
                executor="dask",
                scheduler=cluster.scheduler_address,
                **FAST,
            )
        finally:
            done.set()
            watcher.join()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert bad == []
    params = lambda run: [r["params"] for _, r in sorted(_records(run).items())]  # noqa: E731
    assert params(tmp_path / "local") == params(tmp_path / "dask")  # same seed, same trials asked
    done = [r for r in _records(tmp_path / "dask").values() if r["state"] == "complete"]
    assert done and all(r["machine"]["kind"] for r in done)  # each worker says where it measured
    assert local["complete"] == dask["complete"] and local["failed"] == dask["failed"]
