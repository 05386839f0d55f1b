"""Affine integer quantization and the observers that choose its range from calibration data.

A real value ``x`` maps to ``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` and back to
``(q - zero_point) * scale``. Asymmetric schemes fit ``[min, max]`` (widened to contain 0, so that
0.0 is exactly representable); symmetric ones fit ``[-amax, amax]`` with the zero-point at 0 for
int8 (128 for uint8). Per-channel schemes keep one scale and zero-point per slice along ``axis``.

Observers see calibration tensors batch by batch and choose the range:

* ``minmax``     the extremes seen;
* ``percentile`` clip at a percentile of the values (of |x| for symmetric schemes);
* ``entropy``    TensorRT's method: the clipping threshold whose 8-bit histogram has the
  smallest KL divergence from the unclipped one;
* ``mse``        the clipping range with the least expected squared quantization error.

Percentile, entropy and MSE work on a histogram that grows (by exact bin merging) as larger
values arrive, so memory stays constant however much data is seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

DType = Literal["int8", "uint8"]
_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
_EPS = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class QScheme:
    """How a tensor is quantized: integer type, symmetry and granularity."""

    dtype: DType = "int8"
    symmetric: bool = True
    per_channel: bool = False
    axis: int = 0  # the channel axis for per-channel schemes (0: Conv/Linear output channels)
    narrow: bool = False  # symmetric int8 in [-127, 127] (as many accelerators expect)

    @property
    def qmin(self) -> int:
        lo = _RANGES[self.dtype][0]
        return lo + 1 if self.narrow and self.dtype == "int8" else lo

    @property
    def qmax(self) -> int:
        return _RANGES[self.dtype][1]

    @property
    def label(self) -> str:
        sym = "sym" if self.symmetric else "asym"
        gran = "per-channel" if self.per_channel else "per-tensor"
        return f"{self.dtype} {sym} {gran}"

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "symmetric": self.symmetric, "per_channel": self.per_channel, "axis": self.axis}


# Common schemes: weights int8 symmetric per-channel, activations uint8 asymmetric per-tensor.
WEIGHT_SCHEME = QScheme("int8", symmetric=True, per_channel=True)
ACTIVATION_SCHEME = QScheme("uint8", symmetric=False, per_channel=False)


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(np.asarray(x))


def qparams(min_val: Any, max_val: Any, scheme: QScheme) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (float) and zero-point (int64) for the range ``[min_val, max_val]`` (scalars or per-channel)."""
    lo = torch.clamp(_as_tensor(min_val).double(), max=0.0)  # the range must contain 0
    hi = torch.clamp(_as_tensor(max_val).double(), min=0.0)
    qmin, qmax = scheme.qmin, scheme.qmax
    if scheme.symmetric:
        amax = torch.maximum(-lo, hi)
        scale = amax / ((qmax - qmin) / 2)
        zp_value = 0 if scheme.dtype == "int8" else (qmin + qmax + 1) // 2
        zero_point = torch.full_like(scale, zp_value, dtype=torch.int64)
    else:
        scale = (hi - lo) / (qmax - qmin)
        scale = torch.where(scale > _EPS, scale, torch.ones_like(scale))
        zero_point = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int64)
    scale = torch.where(scale > _EPS, scale, torch.ones_like(scale))
    return scale.float(), zero_point


def _broadcast(p: torch.Tensor, x: torch.Tensor, scheme: QScheme) -> torch.Tensor:
    if p.dim() == 0 or not scheme.per_channel:
        return p
    shape = [1] * x.dim()
    shape[scheme.axis] = -1
    return p.reshape(shape)


def quantize(x: Any, scale: Any, zero_point: Any, scheme: QScheme) -> torch.Tensor:
    """Real -> integer (int64 tensor holding values in [qmin, qmax]); rounds half to even like ONNX."""
    t = _as_tensor(x).float()
    s = _broadcast(_as_tensor(scale).float(), t, scheme)
    z = _broadcast(_as_tensor(zero_point).to(torch.int64), t, scheme)
    return torch.clamp(torch.round(t / s).to(torch.int64) + z, scheme.qmin, scheme.qmax)


def dequantize(q: Any, scale: Any, zero_point: Any, scheme: QScheme) -> torch.Tensor:
    """Integer -> real."""
    t = _as_tensor(q).to(torch.int64)
    s = _broadcast(_as_tensor(scale).float(), t, scheme)
    z = _broadcast(_as_tensor(zero_point).to(torch.int64), t, scheme)
    return (t - z).float() * s


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, scheme: QScheme) -> torch.Tensor:
    """Quantize then dequantize, keeping float dtype; gradients pass straight through inside the range.

    Uses PyTorch's fused fake-quant kernels (whose backward is the straight-through estimator).
    """
    x = x.float()
    if scheme.per_channel and scale.dim() > 0:
        return torch.fake_quantize_per_channel_affine(
            x, scale.float(), zero_point.to(torch.int32), scheme.axis, scheme.qmin, scheme.qmax
        )
    return torch.fake_quantize_per_tensor_affine(
        x, scale.float().reshape(()), zero_point.to(torch.int32).reshape(()), scheme.qmin, scheme.qmax
    )


def sqnr_db(reference: Any, approx: Any) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum x^2 / sum (x - x_q)^2); inf when exact."""
    r = _as_tensor(reference).double()
    a = _as_tensor(approx).double()
    noise = float(((r - a) ** 2).sum())
    signal = float((r**2).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


# --------------------------------------------------------------------------- histograms


class Histogram:
    """A histogram of values over ``[-R, R]`` whose range doubles (merging bin pairs exactly) as needed.

    ``bins`` per side; the layout is symmetric about 0 so that |x| histograms are a fold.
    """

    def __init__(self, bins_per_side: int = 2048) -> None:
        self.half = bins_per_side
        self.counts: torch.Tensor | None = None  # 2*half float64 counts
        self.radius = 0.0
        self.min = math.inf
        self.max = -math.inf

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1)
        if x.numel() == 0:
            return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        amax = max(-lo, hi, 1e-12)
        if self.counts is None:
            self.radius = amax
            self.counts = torch.zeros(2 * self.half, dtype=torch.float64)
        while amax > self.radius:
            self._double()
        h = torch.histc(x, bins=2 * self.half, min=-self.radius, max=self.radius)
        self.counts += h.double()

    def _double(self) -> None:
        assert self.counts is not None
        merged = self.counts.reshape(-1, 2).sum(1)  # half as many bins of twice the width
        new = torch.zeros_like(self.counts)
        q = self.half // 2
        new[q : q + self.half] = merged
        self.counts = new
        self.radius *= 2

    @property
    def edges(self) -> torch.Tensor:
        return torch.linspace(-self.radius, self.radius, 2 * self.half + 1, dtype=torch.float64)

    @property
    def centers(self) -> torch.Tensor:
        e = self.edges
        return (e[:-1] + e[1:]) / 2

    def abs_counts(self) -> torch.Tensor:
        """Counts of |x| over ``half`` bins covering [0, R]."""
        assert self.counts is not None
        return self.counts[self.half :] + self.counts[: self.half].flip(0)

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` of the values lie (upper edge of the bin)."""
        assert self.counts is not None
        cdf = torch.cumsum(self.counts, 0) / self.counts.sum()
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64)).clamp(max=len(cdf) - 1))
        return float(self.edges[i + 1])

    def abs_quantile(self, q: float) -> float:
        c = self.abs_counts()
        cdf = torch.cumsum(c, 0) / c.sum()
        i = int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64)).clamp(max=len(cdf) - 1))
        return (i + 1) * self.radius / self.half


# --------------------------------------------------------------------------- observers


class Observer:
    """Accumulates calibration statistics; ``compute()`` returns (scale, zero_point) for its scheme."""

    method = "base"

    def __init__(self, scheme: QScheme = ACTIVATION_SCHEME) -> None:
        self.scheme = scheme
        self.n_seen = 0

    def update(self, x: Any) -> None:
        t = _as_tensor(x).float()
        if self.scheme.per_channel:
            t = t.movedim(self.scheme.axis, 0).reshape(t.shape[self.scheme.axis], -1)
            self._update_channels(t)
        else:
            self._update_channels(t.reshape(1, -1))
        self.n_seen += 1

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen (min, max), one entry per channel (one in all for per-tensor)."""
        if self.n_seen == 0:
            raise ValueError(f"{type(self).__name__} has seen no data; call update() with calibration tensors first")
        lo, hi = self._range()
        return lo, hi

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.range()
        scale, zp = qparams(lo, hi, self.scheme)
        if not self.scheme.per_channel:
            scale, zp = scale.reshape(()), zp.reshape(())
        return scale, zp

    def _update_channels(self, t: torch.Tensor) -> None:  # t: channels x values
        raise NotImplementedError

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class MinMaxObserver(Observer):
    method = "minmax"

    def __init__(self, scheme: QScheme = ACTIVATION_SCHEME) -> None:
        super().__init__(scheme)
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def _update_channels(self, t: torch.Tensor) -> None:
        lo, hi = t.min(1).values.double(), t.max(1).values.double()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.lo is not None and self.hi is not None
        return self.lo, self.hi


class _HistogramObserver(Observer):
    def __init__(self, scheme: QScheme = ACTIVATION_SCHEME, bins_per_side: int = 2048) -> None:
        super().__init__(scheme)
        self.bins = bins_per_side
        self.hists: list[Histogram] = []

    def _update_channels(self, t: torch.Tensor) -> None:
        if not self.hists:
            self.hists = [Histogram(self.bins) for _ in range(t.shape[0])]
        for h, row in zip(self.hists, t, strict=True):
            h.update(row)

    def _range(self) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self._range_one(h) for h in self.hists]
        return (
            torch.tensor([p[0] for p in pairs], dtype=torch.float64),
            torch.tensor([p[1] for p in pairs], dtype=torch.float64),
        )

    def _range_one(self, h: Histogram) -> tuple[float, float]:
        raise NotImplementedError


class PercentileObserver(_HistogramObserver):
    """Clip at ``percentile`` (of |x| for symmetric schemes; of each tail for asymmetric ones)."""

    method = "percentile"

    def __init__(
        self, scheme: QScheme = ACTIVATION_SCHEME, percentile: float = 99.99, bins_per_side: int = 2048
    ) -> None:
        super().__init__(scheme, bins_per_side)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must lie in (50, 100], got {percentile}")
        self.percentile = percentile

    def _range_one(self, h: Histogram) -> tuple[float, float]:
        p = self.percentile / 100.0
        if self.scheme.symmetric:
            t = min(h.abs_quantile(p), max(-h.min, h.max))
            return -t, t
        lo = max(h.quantile(1.0 - p), h.min) if h.min < 0 else h.min
        hi = min(h.quantile(p), h.max) if h.max > 0 else h.max
        return lo, hi


class EntropyObserver(_HistogramObserver):
    """TensorRT's entropy calibration: the |x| threshold minimising KL(P || Q) of the 8-bit histogram.

    For each candidate threshold (bin ``i`` from ``levels`` to the end), P is the |x| histogram cut at
    ``i`` with the clipped tail added to its last bin, and Q is P merged into ``levels`` bins and expanded
    back over P's non-empty bins. Values are one-sided after ReLU: then an asymmetric uint8 scheme
    spends all 256 levels on [0, T].
    """

    method = "entropy"

    def __init__(
        self, scheme: QScheme = ACTIVATION_SCHEME, bins_per_side: int = 2048, stride: int | None = None
    ) -> None:
        super().__init__(scheme, bins_per_side)
        # every candidate threshold per tensor; every 4th per channel (many channels, same resolution need)
        self.stride = max(1, stride) if stride is not None else (4 if scheme.per_channel else 1)

    def _range_one(self, h: Histogram) -> tuple[float, float]:
        one_sided = h.min >= 0
        levels = (self.scheme.qmax - self.scheme.qmin + 1) // (1 if one_sided and not self.scheme.symmetric else 2)
        t = kl_threshold(h.abs_counts().numpy(), levels, self.stride) * h.radius / h.half
        t = min(t, max(-h.min, h.max))
        if self.scheme.symmetric:
            return -t, t
        return max(h.min, -t), min(h.max, t)


def kl_threshold(hist: np.ndarray, levels: int = 128, stride: int = 1) -> int:
    """The number of |x| bins to keep (the threshold index) that minimises KL(P || Q), TensorRT style.

    Vectorised over candidate thresholds in chunks: for a candidate ``i``, bin ``k < i`` falls in group
    ``floor(k * levels / i)``; each group's mass (from cumulative sums) is spread evenly over its
    non-empty bins to give Q; P is ``hist[:i]`` with the clipped tail added to bin ``i - 1``.
    """
    hist = np.asarray(hist, dtype=np.float64)
    nz = np.nonzero(hist)[0]
    if len(nz) == 0:
        return len(hist)
    last = int(nz[-1]) + 1
    if last <= levels:
        return last
    hist = hist[:last]
    total = hist.sum()
    cum = np.concatenate([[0.0], np.cumsum(hist)])
    nonzero = (hist > 0).astype(np.float64)
    cum_nz = np.concatenate([[0.0], np.cumsum(nonzero)])
    candidates = np.arange(levels, last + 1, stride)
    if candidates[-1] != last:
        candidates = np.append(candidates, last)
    k = np.arange(last)
    best_i, best_kl = last, math.inf
    for chunk in np.array_split(candidates, max(1, len(candidates) // 128)):
        i = chunk[:, None].astype(np.float64)  # candidates x 1
        inside = k[None, :] < i
        g = np.floor(k[None, :] * levels / i)
        lo = np.ceil(g * i / levels).astype(np.int64)
        hi = np.minimum(np.ceil((g + 1) * i / levels).astype(np.int64), chunk[:, None])
        lo = np.minimum(lo, last)
        hi = np.minimum(hi, last)
        mass = cum[hi] - cum[lo]
        count = cum_nz[hi] - cum_nz[lo]
        q = np.where(inside & (nonzero[None, :] > 0), mass / np.maximum(count, 1.0), 0.0)
        p = np.where(inside, hist[None, :], 0.0)
        tail = total - cum[chunk]
        p[np.arange(len(chunk)), chunk - 1] += tail
        p_n = p / total
        q_n = q / cum[chunk][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p_n > 0, p_n * np.log(p_n / np.where(q_n > 0, q_n, 1e-12)), 0.0)
        kl = terms.sum(1)
        j = int(np.argmin(kl))
        if kl[j] < best_kl:
            best_kl, best_i = float(kl[j]), int(chunk[j])
    return best_i


class MSEObserver(_HistogramObserver):
    """The clipping range (a shrink factor of the observed range) with the least expected squared error."""

    method = "mse"

    def __init__(self, scheme: QScheme = ACTIVATION_SCHEME, bins_per_side: int = 2048, grid: int = 200) -> None:
        super().__init__(scheme, bins_per_side)
        self.grid = grid

    def _range_one(self, h: Histogram) -> tuple[float, float]:
        assert h.counts is not None
        keep = h.counts > 0
        centers, w = h.centers[keep], h.counts[keep]
        lo0, hi0 = min(h.min, 0.0), max(h.max, 0.0)
        alphas = torch.linspace(1.0 / self.grid, 1.0, self.grid, dtype=torch.float64)
        scale, zp = qparams(alphas * lo0, alphas * hi0, self.scheme)
        s, z = scale.double()[:, None], zp.double()[:, None]
        q = torch.clamp(torch.round(centers[None, :] / s) + z, self.scheme.qmin, self.scheme.qmax)
        err = (w[None, :] * ((q - z) * s - centers[None, :]) ** 2).sum(1)
        a = float(alphas[int(torch.argmin(err))])
        return lo0 * a, hi0 * a


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
}


def make_observer(method: str, scheme: QScheme, **kwargs: Any) -> Observer:
    """An observer by name (minmax, percentile, entropy, mse) for ``scheme``."""
    try:
        cls = OBSERVERS[method]
    except KeyError:
        raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(OBSERVERS)}") from None
    return cls(scheme, **kwargs)


def quantize_tensor(x: Any, scheme: QScheme, method: str = "minmax", **kwargs: Any) -> dict[str, Any]:
    """Observe ``x`` once, quantize it, and return the integer tensor, its qparams and the SQNR."""
    t = _as_tensor(x).float()
    obs = make_observer(method, scheme, **kwargs)
    obs.update(t)
    scale, zp = obs.compute()
    q = quantize(t, scale, zp, scheme)
    xq = dequantize(q, scale, zp, scheme)
    return {"q": q, "scale": scale, "zero_point": zp, "dequantized": xq, "sqnr_db": sqnr_db(t, xq)}


# --------------------------------------------------------------------------- the observer table


def outlier_tensor(
    seed: int = 0, channels: int = 64, per_channel: int = 16384, outliers: int = 3, magnitude: float = 40.0
) -> torch.Tensor:
    """The fixed test tensor of the observer table: Gaussian values with a few large outliers.

    ``channels x per_channel`` values from N(0, 1); channel c's scale grows from 0.5 to 2 (so
    per-channel schemes have something to gain); ``outliers`` entries (in distinct channels) are set
    to +-``magnitude``, like the rare large activations of a real network.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(channels, per_channel, generator=g) * torch.linspace(0.5, 2.0, channels).unsqueeze(1)
    rows = torch.randperm(channels, generator=g)[:outliers]
    cols = torch.randint(0, per_channel, (outliers,), generator=g)
    signs = torch.where(torch.rand(outliers, generator=g) < 0.5, -1.0, 1.0)
    x[rows, cols] = signs * magnitude
    return x


TABLE_SCHEMES = (
    QScheme("int8", symmetric=True, per_channel=False),
    QScheme("uint8", symmetric=False, per_channel=False),
    QScheme("int8", symmetric=True, per_channel=True),
    QScheme("uint8", symmetric=False, per_channel=True),
)


def observer_table(
    x: torch.Tensor | None = None,
    methods: tuple[str, ...] = tuple(OBSERVERS),
    schemes: tuple[QScheme, ...] = TABLE_SCHEMES,
    percentile: float = 99.99,
) -> list[dict[str, Any]]:
    """SQNR (dB) of every observer x scheme on ``x`` (default: :func:`outlier_tensor`), per-channel on axis 0."""
    t = outlier_tensor() if x is None else _as_tensor(x).float()
    rows = []
    for method in methods:
        for scheme in schemes:
            kw = {"percentile": percentile} if method == "percentile" else {}
            r = quantize_tensor(t, scheme, method, **kw)
            lo, hi = r["dequantized"].min(), r["dequantized"].max()
            rows.append(
                {
                    "observer": method,
                    "scheme": scheme.label,
                    "sqnr_db": r["sqnr_db"],
                    "range": [float(lo), float(hi)],
                    "scale": float(r["scale"].max()) if r["scale"].dim() else float(r["scale"]),
                }
            )
    return rows
