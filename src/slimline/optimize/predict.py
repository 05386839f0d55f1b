"""Batch inference over a dataset: worker processes, ordered output, resumable shards.

``predict(artifact, data, out)`` cuts the dataset into shards of ``shard_size`` samples. Each worker
process opens its own runtime session (with ``threads // workers`` threads unless told otherwise),
takes shard numbers from a queue, and writes each shard's logits atomically to
``OUT.shards/shard_NNNNN.npy``. The parent shows progress and, once every shard exists, writes
``OUT`` in dataset order:

- ``.npy``: predicted classes (int64, N), or the logits (float32, N x classes) with ``logits=True``;
- ``.parquet`` (needs pyarrow): columns ``index``, ``pred``, ``confidence`` (softmax of the top
  class), ``label`` (when the data has labels) and, with ``logits=True``, ``logits`` (list of floats).

Named arrays (a ``.npz``/``.npy`` source, a folder of ``.wav`` files, or a
:class:`~slimline.data.arrays.NamedSamples`) are predicted with any artifact: each batch goes through
``session.run_named`` and ``OUT`` (``.npz``) holds every output by name, samples on each output's batch axis
(``.npy`` holds the lone output of a single-output model). They use the same shards, workers and resume,
each shard a ``shard_NNNNN.npz`` of every output.

Interrupted runs (Ctrl-C, a kill, a crash) keep their finished shards; running the same command
again computes only the missing ones. ``manifest.json`` in the shard folder records what the shards
belong to (model files, data, shard size, batch size, runtime), so shards of another model or data
slice are never mixed in. A shard's result does not depend on which worker computed it or how many
workers there were: batches are cut inside shards, the same way each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue as queue_mod
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import TaskID

from slimline.artifact import Artifact
from slimline.data import ArrayDataset, load_dataset
from slimline.data.arrays import NamedSamples, is_arrays_path, load_arrays
from slimline.data.preprocess import Preprocess, parse_preprocess, recorded_preprocess
from slimline.errors import DataError, SlimlineError
from slimline.fileio import atomic_path, write_json

FORMATS = (".npy", ".parquet")
NAMED_FORMATS = (".npz", ".npy")


@dataclass
class _Job:
    artifact_path: str
    runtime: str
    options: dict[str, Any]
    batch_size: int
    shard_size: int
    shard_dir: str
    trust: dict[str, Any] | None = None  # slimline.models.trust_state(): factories the artifact may import
    axes: dict[str, int] | None = None  # named arrays: output name -> its batch axis (None: one logits array)


def _fingerprint_files(artifact: Artifact) -> str:
    """A digest of the artifact's model files (names, sizes, modification times)."""
    h = hashlib.sha256()
    for name in sorted(artifact.files.values()):
        st = (artifact.path / name).stat()
        h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _fingerprint(
    artifact: Artifact, ds: ArrayDataset, runtime: str, shard_size: int, batch_size: int
) -> dict[str, Any]:
    data_hash = hashlib.sha256(np.ascontiguousarray(ds.x[: min(len(ds), 64)]).tobytes()).hexdigest()[:16]
    return {
        "artifact": str(artifact.path.resolve()),
        "model_files": _fingerprint_files(artifact),
        "data": {"name": ds.spec.name, "split": ds.split, "n": len(ds), "head_sha256": data_hash},
        "runtime": runtime,
        "shard_size": shard_size,
        "batch_size": batch_size,
    }


def shard_path(shard_dir: str | Path, i: int, named: bool = False) -> Path:
    return Path(shard_dir) / f"shard_{i:05d}.{'npz' if named else 'npy'}"


def _save_npy(path: Path, arr: np.ndarray | dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if isinstance(arr, dict):
            np.savez(f, **arr)  # type: ignore[arg-type]  # numpy stub: **kwds could name allow_pickle
        else:
            np.save(f, arr)


def _join(parts: dict[str, list[np.ndarray]], axes: dict[str, int]) -> dict[str, np.ndarray]:
    """Each output's pieces joined on its batch axis (a scalar output's values stacked)."""
    return {name: np.concatenate(p, axis=axes.get(name, 0)) if p[0].ndim else np.stack(p) for name, p in parts.items()}


def _run_shard(session: Any, ds: ArrayDataset | NamedSamples, i: int, job: _Job) -> np.ndarray | dict[str, np.ndarray]:
    start = i * job.shard_size
    stop = min(len(ds), start + job.shard_size)
    if isinstance(ds, NamedSamples):
        parts: dict[str, list[np.ndarray]] = {}
        for feeds in ds.subset(slice(start, stop)).batches(job.batch_size):
            for name, value in session.run_named(feeds).items():
                parts.setdefault(name, []).append(np.asarray(value))
        return _join(parts, job.axes or {})
    outs = []
    for b in range(start, stop, job.batch_size):
        x = ds.normalize(ds.x[b : min(stop, b + job.batch_size)]).numpy()
        outs.append(np.asarray(session.run(np.ascontiguousarray(x)), dtype=np.float32))
    return np.concatenate(outs)


def _open(job: _Job) -> Any:
    from slimline.models import trust_from
    from slimline.runtimes import open_session

    with trust_from(job.trust):
        return open_session(Artifact.load(job.artifact_path), job.runtime, **job.options)


def _worker(job: _Job, ds: ArrayDataset | NamedSamples, tasks: Any, results: Any) -> None:
    """Worker process: open a session, then compute shards from ``tasks`` until told to stop."""
    import multiprocessing as mp

    from slimline.environment import die_with_parent

    parent = mp.parent_process()
    die_with_parent(parent.pid if parent is not None else None)  # even a parent killed outright takes it along
    os.environ["SLIMLINE_PROGRESS"] = "0"
    try:
        session = _open(job)
    except BaseException as e:  # noqa: BLE001 - report every failure to the parent
        results.put(("error", -1, f"{type(e).__name__}: {e}"))
        return
    while True:
        try:
            i = tasks.get(timeout=1.0)
        except queue_mod.Empty:
            if parent is not None and not parent.is_alive():
                return  # the parent was killed: stop quietly, finished shards are on disk
            continue
        if i is None or (parent is not None and not parent.is_alive()):
            return
        try:
            _save_npy(shard_path(job.shard_dir, i, job.axes is not None), _run_shard(session, ds, i, job))
            results.put(("done", i, ""))
        except BaseException as e:  # noqa: BLE001
            results.put(("error", i, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
            return


def _load_data(
    data: str | ArrayDataset,
    split: str,
    data_dir: str | Path | None,
    limit: int | None,
    download: bool = False,
    preprocess: Preprocess | None = None,
) -> ArrayDataset:
    if isinstance(data, ArrayDataset):
        return data.take(limit)
    return load_dataset(data, split, data_dir, limit, download=download, preprocess=preprocess)


def _prepare_shards(shard_dir: Path, manifest: dict[str, Any], resume: bool) -> None:
    mf = shard_dir / "manifest.json"
    if shard_dir.exists():
        old = None
        if mf.exists():
            try:
                old = json.loads(mf.read_text())
            except json.JSONDecodeError:
                old = None
        if not resume or old != manifest:
            shutil.rmtree(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    if not mf.exists():
        write_json(mf, manifest)


def _valid_shard(path: Path, rows: int, axes: dict[str, int] | None = None) -> bool:
    """A finished shard: ``rows`` samples of logits, or (``axes``) of every named output on its batch axis."""
    try:
        if axes is None:
            arr = np.load(path, mmap_mode="r")
            return arr.ndim == 2 and arr.shape[0] == rows
        with np.load(path) as z:
            return set(z.files) == set(axes) and all(
                z[k].ndim > ax and z[k].shape[ax] == rows for k, ax in axes.items()
            )
    except (OSError, ValueError, KeyError, EOFError):
        return False


def _write_output(out: Path, logits: np.ndarray, ds: ArrayDataset, with_logits: bool) -> dict[str, Any]:
    pred = logits.argmax(1).astype(np.int64) if len(logits) else np.zeros(0, np.int64)
    if out.suffix == ".npy":
        _save_npy(out, logits if with_logits else pred)
        return {"format": "npy", "content": "logits" if with_logits else "predicted classes"}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as e:
        raise SlimlineError(f"writing {out.name} needs pyarrow ({e}): pip install pyarrow, or write a .npy file") from e
    z = logits - logits.max(1, keepdims=True)
    conf = (1.0 / np.exp(z).sum(1)).astype(np.float32)
    cols: dict[str, Any] = {"index": np.arange(len(pred), dtype=np.int64), "pred": pred, "confidence": conf}
    if len(ds.y) == len(pred):
        cols["label"] = ds.y.astype(np.int64)
    if with_logits:
        cols["logits"] = pa.array(list(logits.astype(np.float32)), type=pa.list_(pa.float32()))
    table = pa.table(cols)
    with atomic_path(out) as tmp:
        pq.write_table(table, str(tmp))
    return {"format": "parquet", "columns": list(cols)}


def predict(
    artifact: Artifact | str | Path,
    data: str | Path | ArrayDataset | NamedSamples,
    out: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    limit: int | None = None,
    runtime: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    batch_size: int | None = None,
    shard_size: int = 1000,
    logits: bool = False,
    resume: bool = True,
    keep_shards: bool = False,
    options: dict[str, Any] | None = None,
    progress: bool = True,
    download: bool = False,
    trust_code: bool = False,
    preprocess: Preprocess | dict[str, Any] | str | None = None,
    _stop_after: int | None = None,
) -> dict[str, Any]:
    """Predict every sample of ``data`` (a dataset name or an ArrayDataset) with ``artifact``; write ``out``.
    Named arrays (a path :func:`~slimline.data.arrays.is_arrays_path` accepts, or NamedSamples) go to
    :func:`predict_named` (outputs by name; the same workers, shards and resume).

    ``threads``: the total for all workers (default: the CPU count); each worker gets an equal share.
    ``batch_size``: default the artifact's tuned ``runtime_config[runtime]["batch_size"]``, else 64.
    ``download``: fetch the dataset if it is not found locally. ``trust_code``: let a torch artifact import
    the ``module:factory`` its model.json names (otherwise only factories trusted by the caller).
    ``preprocess``: imagefolder's (default: the one the artifact records, else imagefolder's own).
    ``_stop_after`` (testing): exit the process abruptly (``os._exit``) after that many new shards.
    """
    from slimline.data.text import load_text_source
    from slimline.models import trust_state, trusted_factories
    from slimline.runtimes import default_runtime

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    out = Path(out)
    texts = load_text_source(data, split) if isinstance(data, str | Path) else None
    if texts is not None:  # raw text through the artifact's own tokenizer, then as named arrays
        from slimline.tasks.text import text_samples

        data = text_samples(art, texts.take(limit))
    if isinstance(data, NamedSamples) or (isinstance(data, str | Path) and is_arrays_path(data)):
        if preprocess is not None:
            raise SlimlineError(
                "preprocess applies to imagefolder's images; named arrays are fed as saved: leave it out"
            )
        return predict_named(
            art,
            data,
            out,
            limit=limit,
            runtime=runtime,
            workers=workers,
            threads=threads,
            batch_size=batch_size,
            shard_size=shard_size,
            resume=resume,
            keep_shards=keep_shards,
            options=options,
            progress=progress,
            trust_code=trust_code,
            _stop_after=_stop_after,
        )
    if isinstance(data, Path):
        data = str(data)
    if out.suffix not in FORMATS:
        raise SlimlineError(f"output must end in {' or '.join(FORMATS)}, not {out.name!r}")
    if workers < 1 or shard_size < 1:
        raise SlimlineError("workers and shard_size must be at least 1")
    pp = parse_preprocess(preprocess)
    if pp is None and data == "imagefolder":
        pp = recorded_preprocess(art.meta)
    ds = _load_data(data, split, data_dir, limit, download, pp)
    if len(ds) == 0:
        raise DataError("the dataset is empty: nothing to predict")
    rt = runtime or default_runtime(art)
    cfg = art.meta.get("runtime_config", {}).get(rt, {})
    bs = int(batch_size or cfg.get("batch_size") or 64)
    opts = dict(options or {})
    total_threads = threads or os.cpu_count() or 1
    if workers > 1 or threads:
        opts["threads"] = max(1, total_threads // workers)
    shard_dir = out.with_name(out.name + ".shards")
    manifest = _fingerprint(art, ds, rt, shard_size, bs)
    _prepare_shards(shard_dir, manifest, resume)
    n_shards = (len(ds) + shard_size - 1) // shard_size
    rows = [min(shard_size, len(ds) - i * shard_size) for i in range(n_shards)]
    todo = [i for i in range(n_shards) if not _valid_shard(shard_path(shard_dir, i), rows[i])]
    reused = n_shards - len(todo)
    with trusted_factories(trust_code=trust_code):
        trust = trust_state()
    job = _Job(str(art.path), rt, opts, bs, shard_size, str(shard_dir), trust)
    if todo:
        _compute(job, ds, todo, rows, workers, progress, reused, _stop_after)
    parts = [np.load(shard_path(shard_dir, i)) for i in range(n_shards)]
    all_logits = np.concatenate(parts)
    info = _write_output(out, all_logits, ds, logits)
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    result = {
        "output": str(out),
        "n": len(ds),
        "shards": n_shards,
        "shards_reused": reused,
        "workers": workers,
        "threads_per_worker": opts.get("threads"),
        "runtime": rt,
        "batch_size": bs,
        **info,
    }
    if len(ds.y) == len(all_logits):
        result["top1"] = float((all_logits.argmax(1) == ds.y).mean() * 100)
    return result


def predict_named(
    artifact: Artifact | str | Path,
    data: str | Path | NamedSamples,
    out: str | Path,
    limit: int | None = None,
    runtime: str | None = None,
    workers: int = 1,
    threads: int | None = None,
    batch_size: int | None = None,
    shard_size: int = 1000,
    resume: bool = True,
    keep_shards: bool = False,
    options: dict[str, Any] | None = None,
    progress: bool = True,
    trust_code: bool = False,
    _stop_after: int | None = None,
) -> dict[str, Any]:
    """Predict named arrays with any artifact: ``session.run_named`` per batch; ``out`` (.npz) holds every output
    by name, its samples on the output's batch axis (.npy: a single-output model's output). Shards, workers,
    ``threads`` and ``resume`` work as in :func:`predict`; each shard is a ``.npz`` of every output."""
    from slimline.models import trust_state, trusted_factories
    from slimline.runtimes import default_runtime
    from slimline.signature import BATCH, artifact_signature

    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    out = Path(out)
    if out.suffix not in NAMED_FORMATS:
        raise SlimlineError(f"named arrays predict every output by name: write a .npz file, not {out.name!r}")
    if workers < 1 or shard_size < 1:
        raise SlimlineError("workers and shard_size must be at least 1")
    sig = artifact_signature(art)
    if out.suffix == ".npy" and len(sig.outputs) != 1:
        raise SlimlineError(
            f"a .npy file holds one array but the model has outputs {', '.join(sig.output_names)}; write a .npz file"
        )
    samples = (data if isinstance(data, NamedSamples) else load_arrays(data, sig)).conform(sig).take(limit)
    rt = runtime or default_runtime(art)
    bs = int(batch_size or art.meta.get("runtime_config", {}).get(rt, {}).get("batch_size") or 64)
    opts = dict(options or {})
    total_threads = threads or os.cpu_count() or 1
    if workers > 1 or threads:
        opts["threads"] = max(1, total_threads // workers)
    axes = {t.name: next((i for i, d in enumerate(t.shape) if d == BATCH), 0) for t in sig.outputs}
    shard_dir = out.with_name(out.name + ".shards")
    manifest = {
        "artifact": str(art.path.resolve()),
        "model_files": _fingerprint_files(art),
        "data": {"source": samples.source, "n": len(samples), "sha1": samples.fingerprint().hex()[:16]},
        "runtime": rt,
        "shard_size": shard_size,
        "batch_size": bs,
        "outputs": axes,
    }
    _prepare_shards(shard_dir, manifest, resume)
    n_shards = (len(samples) + shard_size - 1) // shard_size
    rows = [min(shard_size, len(samples) - i * shard_size) for i in range(n_shards)]
    todo = [i for i in range(n_shards) if not _valid_shard(shard_path(shard_dir, i, True), rows[i], axes)]
    reused = n_shards - len(todo)
    with trusted_factories(trust_code=trust_code):
        trust = trust_state()
    job = _Job(str(art.path), rt, opts, bs, shard_size, str(shard_dir), trust, axes)
    if todo:
        _compute(job, samples, todo, rows, workers, progress, reused, _stop_after)
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(n_shards):
        with np.load(shard_path(shard_dir, i, True)) as z:
            for name in axes:
                parts.setdefault(name, []).append(z[name])
    outputs = {name: np.concatenate(p, axis=axes[name]) for name, p in parts.items()}
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        if out.suffix == ".npz":
            np.savez(f, **outputs)  # type: ignore[arg-type]  # numpy stub: **kwds could name allow_pickle
        else:
            np.save(f, next(iter(outputs.values())))
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
    result: dict[str, Any] = {
        "output": str(out),
        "n": len(samples),
        "shards": n_shards,
        "shards_reused": reused,
        "workers": workers,
        "threads_per_worker": opts.get("threads"),
        "runtime": rt,
        "batch_size": bs,
        "format": out.suffix[1:],
        "outputs": {name: list(v.shape) for name, v in outputs.items()},
    }
    only = next(iter(outputs.values()))
    if samples.labels is not None and len(outputs) == 1 and only.ndim == 2 and len(only) == len(samples.labels):
        result["top1"] = float((only.argmax(1) == samples.labels).mean() * 100)
    return result


class _NullBar:
    def __enter__(self) -> _NullBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> TaskID:
        return TaskID(0)

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None


def _compute(
    job: _Job,
    ds: ArrayDataset | NamedSamples,
    todo: list[int],
    rows: list[int],
    workers: int,
    progress: bool,
    reused: int,
    stop_after: int | None,
) -> None:
    from slimline.progress import make_progress

    bar = make_progress(transient=True) if progress else _NullBar()
    pending = set(todo)
    done_rows = sum(r for i, r in enumerate(rows) if i not in pending)
    with bar:
        task = bar.add_task("predict", total=sum(rows), completed=done_rows, info=f"{reused} shards reused")
        if workers == 1:
            import torch

            threads_before = torch.get_num_threads()  # a torch session sets the process-wide count
            try:
                session = _open(job)
                for n, i in enumerate(todo, start=1):
                    _save_npy(shard_path(job.shard_dir, i, job.axes is not None), _run_shard(session, ds, i, job))
                    bar.advance(task, rows[i])
                    if stop_after is not None and n >= stop_after:
                        os._exit(137)
            finally:
                torch.set_num_threads(threads_before)
            return
        _compute_parallel(job, ds, todo, rows, workers, bar, task, stop_after)


def _compute_parallel(
    job: _Job,
    ds: ArrayDataset | NamedSamples,
    todo: list[int],
    rows: list[int],
    workers: int,
    bar: Any,
    task: Any,
    stop_after: int | None,
) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked thread pools or runtime state
    tasks, results = ctx.Queue(), ctx.Queue()
    for i in todo:
        tasks.put(i)
    n_procs = min(workers, len(todo))
    for _ in range(n_procs):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(job, ds, tasks, results), daemon=True) for _ in range(n_procs)]
    for p in procs:
        p.start()
    finished = 0
    try:
        while finished < len(todo):
            try:
                kind, i, msg = results.get(timeout=2.0)
            except queue_mod.Empty:
                if not any(p.is_alive() for p in procs):
                    raise SlimlineError(
                        "every predict worker stopped before the work was done; run again to resume"
                    ) from None
                continue
            if kind == "error":
                where = f"shard {i}" if i >= 0 else "loading the model"
                raise SlimlineError(
                    f"a predict worker failed on {where}: {msg}; finished shards are kept, run again to resume"
                )
            finished += 1
            bar.advance(task, rows[i])
            if stop_after is not None and finished >= stop_after:
                os._exit(137)
    finally:
        for p in procs:
            if p.is_alive() and finished < len(todo):
                p.terminate()
        for p in procs:
            p.join(timeout=10)
