"""Magnitude pruning covers recurrent and attention weights, and says what it leaves out."""

from __future__ import annotations

import torch
from torch import nn

from slimline.prune.magnitude import magnitude_prune, prune_targets, remove_masks, sparsity_report


class SeqModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.lstm = nn.LSTM(16, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.emb(ids))
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(a.mean(1))


def _zeros(model: SeqModel) -> dict[str, float]:
    return {n: float((getattr(m, p) == 0).float().mean()) for n, (m, p) in prune_targets(model).items()}


def test_lstm_and_attention_weights_are_pruned() -> None:
    torch.manual_seed(0)
    model = SeqModel()
    names = magnitude_prune(model, 0.5, scope="local")
    assert "lstm.weight_ih_l0" in names and "lstm.weight_hh_l1_reverse" in names
    assert "attn.in_proj_weight" in names and "attn.out_proj" in names and "head" in names
    zeros = _zeros(model)
    assert all(abs(z - 0.5) < 0.01 for z in zeros.values()), zeros
    report = sparsity_report(model, names)
    assert abs(report["sparsity"] - 0.5) < 0.01
    assert report["skipped"] == [{"module": "emb", "param": "weight", "numel": 40 * 16}]
    covered = sum(p.numel() for p in model.parameters() if p.dim() >= 2) - 40 * 16
    assert abs(report["covered_share"] - covered / (covered + 40 * 16)) < 1e-9
    model(torch.zeros(2, 6, dtype=torch.long))  # still runs, with plain parameters again
    assert "weight_ih_l0" in dict(model.lstm.named_parameters())


def test_global_pruning_with_masks_then_removed() -> None:
    torch.manual_seed(0)
    model = SeqModel()
    names = magnitude_prune(model, 0.5, exclude=["head"], permanent=False)
    assert "head" not in names and "weight_ih_l0_orig" in dict(model.lstm.named_parameters())
    out = model(torch.zeros(1, 4, dtype=torch.long))  # masked weights reach the LSTM's fused kernel
    assert out.shape == (1, 5)
    remove_masks(model, names)
    report = sparsity_report(model, names)
    assert abs(report["sparsity"] - 0.5) < 0.01
    assert "lstm.weight_hh_l0" in report["layers"]
    assert "weight_ih_l0" in dict(model.lstm.named_parameters())


def test_covered_share_is_one_without_other_matrices() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.GRU(8, 8))
    names = magnitude_prune(model, 0.5)
    report = sparsity_report(model, names)
    assert report["covered_share"] == 1.0 and report["skipped"] == []
    assert {"1.weight_ih_l0", "1.weight_hh_l0", "0"} <= set(names)
