"""count_macs on recurrent and attention layers, which torch's flop counter alone misses or under-counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimline.models import count_macs


class _Seq(nn.Module):
    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer(x)
        return out[0] if isinstance(out, tuple) else out


def _rnn_hand(gates: int, inp: int, hidden: int, layers: int, dirs: int = 1) -> int:
    per_step = 0
    for layer in range(layers):
        layer_in = inp if layer == 0 else hidden * dirs
        per_step += dirs * gates * (layer_in * hidden + hidden * hidden)
    return per_step


def test_lstm_macs_equal_hand_formula() -> None:
    model = _Seq(nn.LSTM(10, 20, num_layers=2))
    x = torch.zeros(5, 1, 10)  # (seq, batch, input)
    assert count_macs(model, example_input=x) == 5 * _rnn_hand(4, 10, 20, 2)


@pytest.mark.parametrize(("cls", "gates"), [(nn.GRU, 3), (nn.RNN, 1), (nn.LSTM, 4)])
def test_recurrent_macs_bidirectional_batch_first(cls: type[nn.RNNBase], gates: int) -> None:
    model = _Seq(cls(6, 8, num_layers=2, batch_first=True, bidirectional=True))
    assert count_macs(model, (7, 6)) == 7 * _rnn_hand(gates, 6, 8, 2, dirs=2)


def test_transformer_encoder_layer_macs() -> None:
    e, heads, ff, seq = 32, 4, 64, 7
    layer = nn.TransformerEncoderLayer(e, heads, ff, batch_first=True)
    hand = seq * 4 * e * e + 2 * seq * seq * e + seq * 2 * e * ff  # q/k/v/out projections, QKᵀ and PV, feed-forward
    macs = count_macs(layer, (seq, e))
    assert macs > 0
    assert abs(macs - hand) / hand < 0.03
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_multihead_attention_and_integer_ids() -> None:
    class TinyLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(50, 16)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 50)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.emb(ids)
            return self.head(self.attn(h, h, h, need_weights=False)[0])

    seq = 9
    ids = torch.zeros(1, seq, dtype=torch.long)
    hand = seq * 4 * 16 * 16 + 2 * seq * seq * 16 + seq * 16 * 50
    assert count_macs(TinyLM(), example_input=(ids,)) == hand
