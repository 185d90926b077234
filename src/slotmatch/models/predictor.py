"""Transformer predictor: slots of frame t -> initial slots of frame t+1 (SlotContrast Sec. 3, as in
VideoSAUR / SAVi).

Checked against martius-lab/slotcontrast `modules/networks.py::TransformerEncoder` as configured for
MOVi-C/E and YT-VIS (`predictor: networks.TransformerEncoder, n_blocks: 1, n_heads: 4`): pre-norm
blocks (norm_first=True, LayerNorm eps 1e-5), self-attention over the slots with qkv bias and
Xavier-uniform init, feed-forward Linear(D, 4D) -> ReLU -> Linear(4D, D), dropout 0, no final norm.

Attention scale: SlotContrast's `Attention` computes `q / scale` with `scale = head_dim ** -0.5`, i.e.
multiplies the logits by sqrt(head_dim) instead of dividing. We use the standard head_dim ** -0.5
by default; pass qk_scale=head_dim ** 0.5 to reproduce their code exactly.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class PredictorBlock(nn.Module):
    """Pre-norm transformer encoder block over the K slots."""

    def __init__(self, dim: int, heads: int, ff_dim: int, qk_scale: Optional[float] = None):
        super().__init__()
        assert dim % heads == 0, "slot dim must be divisible by the number of heads"
        self.heads = heads
        self.qk_scale = qk_scale
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Linear(ff_dim, dim))
        bound = (6.0 / (dim + dim)) ** 0.5  # Xavier-uniform for each of q, k, v separately
        nn.init.uniform_(self.qkv.weight, -bound, bound)
        nn.init.zeros_(self.qkv.bias)
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, K, D) -> (B, K, D)."""
        B, K, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, K, 3, self.heads, D // self.heads).permute(
            2, 0, 3, 1, 4)  # each (B, H, K, D/H)
        a = F.scaled_dot_product_attention(q, k, v, scale=self.qk_scale)
        x = x + self.proj(a.transpose(1, 2).reshape(B, K, D))
        return x + self.ff(self.norm2(x))


class TransformerPredictor(nn.Module):
    """Stack of pre-norm blocks. (B, K, D) slots at t -> (B, K, D) initial slots at t+1."""

    def __init__(self, dim: int, blocks: int = 1, heads: int = 4, ff_dim: Optional[int] = None,
                 qk_scale: Optional[float] = None):
        super().__init__()
        ff_dim = ff_dim or 4 * dim
        self.blocks = nn.ModuleList(PredictorBlock(dim, heads, ff_dim, qk_scale)
                                    for _ in range(blocks))

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """slots (B, K, D) -> (B, K, D)."""
        for block in self.blocks:
            slots = block(slots)
        return slots
