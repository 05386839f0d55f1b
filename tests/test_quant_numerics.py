"""Affine quantization numerics and observers (slimline.quant.numerics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slimline.quant.numerics import (
    Histogram,
    MinMaxObserver,
    QScheme,
    dequantize,
    fake_quantize,
    kl_threshold,
    make_observer,
    observer_table,
    outlier_tensor,
    qparams,
    quantize,
    quantize_tensor,
    sqnr_db,
)

SCHEMES = [
    QScheme(dtype, symmetric=sym, per_channel=pc)
    for dtype in ("int8", "uint8")
    for sym in (True, False)
    for pc in (False, True)
]


def _ids(s: QScheme) -> str:
    return s.label.replace(" ", "-")


@pytest.mark.parametrize("scheme", SCHEMES, ids=_ids)
def test_round_trip_error_is_at_most_half_a_step(scheme: QScheme) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 500, generator=g) * torch.linspace(0.1, 5.0, 8).unsqueeze(1) + 0.3
    obs = MinMaxObserver(scheme)
    obs.update(x)
    scale, zp = obs.compute()
    q = quantize(x, scale, zp, scheme)
    assert int(q.min()) >= scheme.qmin and int(q.max()) <= scheme.qmax
    err = (dequantize(q, scale, zp, scheme) - x).abs()
    step = scale.reshape(-1, 1) if scheme.per_channel else scale
    # every value in the observed range comes back within half a quantization step
    assert torch.all(err <= step / 2 * (1 + 1e-5) + 1e-7)
    # and the grid is used: the error is not trivially zero
    assert float(err.max()) > float(step.min()) / 10


@pytest.mark.parametrize("scheme", SCHEMES, ids=_ids)
@pytest.mark.parametrize("lo,hi", [(-3.0, 7.0), (2.0, 5.0), (-9.0, -1.0), (0.0, 0.0), (-1e-3, 250.0)])
def test_zero_maps_exactly(scheme: QScheme, lo: float, hi: float) -> None:
    n = 3 if scheme.per_channel else 1
    lo_t, hi_t = torch.full((n,), lo), torch.full((n,), hi)
    scale, zp = qparams(lo_t if scheme.per_channel else lo, hi_t if scheme.per_channel else hi, scheme)
    zeros = torch.zeros(n, 4)
    q = quantize(zeros, scale, zp, scheme)
    assert torch.equal(q, zp.reshape(-1, 1).expand_as(q) if scheme.per_channel else torch.full_like(q, int(zp)))
    back = dequantize(q, scale, zp, scheme)
    assert torch.equal(back, torch.zeros_like(back))  # exactly 0.0, not merely close
    assert torch.all(zp >= scheme.qmin) and torch.all(zp <= scheme.qmax)


def test_symmetric_zero_points() -> None:
    s, z = qparams(-2.0, 5.0, QScheme("int8", symmetric=True))
    assert int(z) == 0 and math.isclose(float(s), 5.0 / 127.5, rel_tol=1e-6)
    _, z = qparams(-2.0, 5.0, QScheme("uint8", symmetric=True))
    assert int(z) == 128
    s, z = qparams(-2.0, 5.0, QScheme("uint8", symmetric=False))
    assert math.isclose(float(s), 7.0 / 255, rel_tol=1e-6) and int(z) == round(2.0 / (7.0 / 255))


@pytest.mark.parametrize("axis", [0, 1])
def test_per_channel_scales_have_one_entry_per_channel(axis: int) -> None:
    w = torch.randn(16, 8, 3, 3)
    scheme = QScheme("int8", symmetric=True, per_channel=True, axis=axis)
    obs = make_observer("minmax", scheme)
    obs.update(w)
    scale, zp = obs.compute()
    assert scale.shape == (w.shape[axis],) and zp.shape == (w.shape[axis],)
    amax = w.abs().movedim(axis, 0).reshape(w.shape[axis], -1).amax(1)
    assert torch.allclose(scale, amax / 127.5, rtol=1e-5)
    q = quantize(w, scale, zp, scheme)
    assert q.shape == w.shape
    # per-channel beats per-tensor when channel ranges differ
    w2 = w * torch.logspace(-2, 0, w.shape[axis]).reshape([-1 if d == axis else 1 for d in range(4)])
    pc = quantize_tensor(w2, scheme)["sqnr_db"]
    pt = quantize_tensor(w2, QScheme("int8", symmetric=True))["sqnr_db"]
    assert pc > pt + 3


def test_fake_quantize_matches_and_passes_gradients_straight_through() -> None:
    scheme = QScheme("uint8", symmetric=False)
    x = torch.linspace(-1, 3, 101, requires_grad=True)
    scale, zp = qparams(-0.5, 2.0, scheme)
    y = fake_quantize(x, scale, zp, scheme)
    ref = dequantize(quantize(x.detach(), scale, zp, scheme), scale, zp, scheme)
    assert torch.allclose(y.detach(), ref, atol=1e-6)
    y.sum().backward()
    inside = (x.detach() >= -0.5) & (x.detach() <= 2.0)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[~inside.logical_or(x.detach().abs() < 0.6)] == 0)


def test_histogram_doubles_its_range_without_losing_counts() -> None:
    h = Histogram(64)
    a, b = torch.rand(1000), torch.rand(500) * 20 - 10
    h.update(a)
    r0 = h.radius
    h.update(b)
    assert h.radius >= 10 and h.radius / r0 in (2**k for k in range(1, 12))
    assert float(h.counts.sum()) == 1500
    assert h.min == pytest.approx(min(float(a.min()), float(b.min())))
    # the quantile of the merged histogram is within one bin of the exact one
    both = torch.cat([a, b])
    exact = float(torch.quantile(both, 0.9))
    assert abs(h.quantile(0.9) - exact) <= 2 * h.radius / h.half + 1e-6


def test_kl_threshold_clips_a_far_outlier() -> None:
    hist = np.zeros(2048)
    hist[:300] = np.exp(-np.arange(300) / 60.0) * 1e4  # the bulk
    hist[2000] = 1.0  # one far value
    t = kl_threshold(hist, 128)
    assert 128 <= t < 1000


def test_observers_on_outlier_tensor() -> None:
    """Entropy and percentile clip the outliers and beat min-max; MSE is never worse than min-max.

    The outliers are rare (3 in 2^20 values): clipping them costs less than the coarse grid min-max
    spreads over every other value.
    """
    x = outlier_tensor()
    per_tensor = QScheme("int8", symmetric=True)
    res = {m: quantize_tensor(x, per_tensor, m) for m in ("minmax", "percentile", "entropy", "mse")}
    assert res["percentile"]["sqnr_db"] > res["minmax"]["sqnr_db"] + 1.0
    assert res["entropy"]["sqnr_db"] > res["minmax"]["sqnr_db"] + 1.0
    assert res["mse"]["sqnr_db"] >= res["minmax"]["sqnr_db"] - 1e-6
    assert float(res["minmax"]["scale"]) == pytest.approx(40.0 / 127.5, rel=1e-5)
    assert float(res["percentile"]["scale"]) < float(res["minmax"]["scale"]) / 3


def test_observer_table_covers_every_observer_and_scheme() -> None:
    x = outlier_tensor(channels=4, per_channel=4096, outliers=1, magnitude=30.0)
    rows = observer_table(x, methods=("minmax", "percentile"))
    assert {(r["observer"], r["scheme"]) for r in rows} == {
        (o, s.label)
        for o in ("minmax", "percentile")
        for s in (
            QScheme("int8", True),
            QScheme("uint8", False),
            QScheme("int8", True, True),
            QScheme("uint8", False, True),
        )
    }
    assert all(np.isfinite(r["sqnr_db"]) and r["sqnr_db"] > 10 for r in rows)


def test_sqnr_db() -> None:
    x = torch.ones(100)
    assert sqnr_db(x, x) == math.inf
    assert sqnr_db(x, x * 1.1) == pytest.approx(20.0, abs=1e-4)  # noise 0.01 of signal power


def test_unknown_observer_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="minmax, percentile, entropy, mse"):
        make_observer("kl", QScheme())
