"""``slimline peak``: what this machine's matrix units deliver, to rate models against.

* fp32: the better of ``torch.mm`` (MKL/oneDNN) and ONNX Runtime's ``MatMul`` (MLAS) on square
  float32 matrices: the machine's peak is what its best GEMM library reaches;
* int8: ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32, the MLAS kernels its quantized
  models use), when onnxruntime is installed.

Each size is timed call by call for a share of ``seconds``; the peak is the best call rate over
all sizes (a shared, busy machine slows calls down, never speeds them up), and the median call
rate is reported beside it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

FP32_SIZES = (512, 1024, 1536)
INT8_SIZES = (512, 1024, 1536)


def _rate(fn: Callable[[], Any], flops: float, seconds: float) -> tuple[float, float]:
    """(best, median) FLOP/s of ``fn`` over ``seconds`` (at least 3 timed calls)."""
    fn()  # warm-up: first-call allocations and kernel selection
    rates: list[float] = []
    start = time.perf_counter()
    while len(rates) < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        rates.append(flops / max(time.perf_counter() - t0, 1e-9))
    return max(rates), float(np.median(rates))


def _torch_fp32(threads: int | None, seconds: float, sizes: tuple[int, ...]) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    per_size = {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        out = torch.empty(n, n)
        best, med = _rate(functools.partial(torch.mm, a, b, out=out), 2.0 * n**3, seconds / len(sizes))
        per_size[str(n)] = {"best_gflops": best / 1e9, "median_gflops": med / 1e9}
    n_threads = torch.get_num_threads()
    return {
        "per_size": per_size,
        "method": f"torch.mm float32 ({torch.__version__}), {n_threads} threads",
        "threads": n_threads,
    }


def _ort_fp32(threads: int | None, seconds: float, sizes: tuple[int, ...]) -> dict[str, Any] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    per_size = {}
    for n in sizes:
        sess = _gemm_session(n, threads, "MatMul")
        a = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
        best, med = _rate(functools.partial(sess.run, None, {"A": a}), 2.0 * n**3, seconds / len(sizes))
        per_size[str(n)] = {"best_gflops": best / 1e9, "median_gflops": med / 1e9}
    method = f"onnxruntime {ort.__version__} MatMul float32 (MLAS), {threads or 'default'} threads"
    return {"per_size": per_size, "method": method}


def fp32_peak(threads: int | None = None, seconds: float = 1.0, sizes: tuple[int, ...] = FP32_SIZES) -> dict[str, Any]:
    """Best fp32 GEMM rate of torch.mm and ONNX Runtime's MatMul (half of ``seconds`` each)."""
    libs = {"torch": _torch_fp32(threads, seconds / 2, sizes)}
    ort_res = _ort_fp32(threads, seconds / 2, sizes)
    if ort_res is not None:
        libs["onnxruntime"] = ort_res
    lib, n = max(
        ((lib, n) for lib, d in libs.items() for n in d["per_size"]),
        key=lambda ln: libs[ln[0]]["per_size"][ln[1]]["best_gflops"],
    )
    best = libs[lib]["per_size"][n]
    return {
        "gflops": best["best_gflops"],
        "median_gflops": best["median_gflops"],
        "size": int(n),
        "method": libs[lib]["method"],
        "threads": libs["torch"]["threads"],
        "libraries": libs,
    }


def _gemm_session(n: int, threads: int | None, op: str = "MatMulInteger") -> Any:
    """An ONNX Runtime session computing A (n x n) @ B (constant): int8 (MatMulInteger) or fp32 (MatMul)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if op == "MatMulInteger":
        b = numpy_helper.from_array(rng.integers(-128, 127, (n, n), dtype=np.int8), "B")
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    else:
        b = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "B")
        a_type = y_type = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["Y"])],
        "gemm",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("Y", y_type, [n, n])],
        [b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def int8_peak(threads: int | None = None, seconds: float = 1.0, sizes: tuple[int, ...] = INT8_SIZES) -> dict[str, Any]:
    try:
        import onnxruntime as ort
    except ImportError as e:
        return {"gops": None, "reason": f"onnxruntime is not installed ({e})"}
    per_size = {}
    for n in sizes:
        sess = _gemm_session(n, threads, "MatMulInteger")
        a = np.random.default_rng(1).integers(0, 255, (n, n), dtype=np.uint8)
        best, med = _rate(functools.partial(sess.run, None, {"A": a}), 2.0 * n**3, seconds / len(sizes))
        per_size[str(n)] = {"best_gops": best / 1e9, "median_gops": med / 1e9}
    best_n = max(per_size, key=lambda k: per_size[k]["best_gops"])
    return {
        "gops": per_size[best_n]["best_gops"],
        "median_gops": per_size[best_n]["median_gops"],
        "size": int(best_n),
        "per_size": per_size,
        "method": f"onnxruntime {ort.__version__} MatMulInteger uint8 x int8",
    }


def measure_peak(
    threads: int | None = None, seconds: float = 2.0, int8: bool = True, sizes: tuple[int, ...] = FP32_SIZES
) -> dict[str, Any]:
    """fp32 (and int8) GEMM peaks of this machine with ``threads`` threads; ``seconds`` in total."""
    share = seconds / 2 if int8 else seconds
    fp32 = fp32_peak(threads, share, sizes)
    out: dict[str, Any] = {"fp32_gflops": fp32["gflops"], "fp32": fp32, "threads": fp32["threads"]}
    if int8:
        i8 = int8_peak(threads, share, sizes)
        out |= {"int8_gops": i8.get("gops"), "int8": i8}
    else:
        out |= {"int8_gops": None, "int8": {"gops": None, "reason": "not measured"}}
    return out
