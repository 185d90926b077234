"""DINOSAUR-style MLP decoder (Seitzer et al. 2023, Sec. 3.2; SlotContrast `MLPDecoder`).

Every slot is broadcast to every patch, a learned per-patch position embedding is added, and a shared
MLP maps it to a feature vector of size F plus one alpha logit. The masks are the softmax over slots
of the alphas and the reconstruction is the mask-weighted sum of the slots' features.
SlotContrast: hidden sizes [1024, 1024, 1024] with ReLU, output F + 1 (alpha is the last column),
pos-embedding N(0, 1) * D ** -0.5, zero biases. `pos_grid` (ours) learns the positions on a coarser grid
and resamples them to the token grid, for models with one token per pixel.

This MLP runs K * N times per frame and dominates the cost of a small model, so:
- all slots and patches go through each layer as one batched matmul;
- the first layer is split exactly, W1 (s + p) + b1 = W1 s + (W1 p + b1): one (B, K) and one (N)
  product, broadcast-added, instead of a product over B * K * N rows;
- `masks_only=True` (inference) computes only the alpha column of the last layer.
"""

from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class MLPDecoder(nn.Module):
    """slots (B, K, D) -> reconstruction (B, N, F) and masks (B, K, N) over a grid of N = h * w."""

    def __init__(self, slot_dim: int, out_dim: int, hidden: Sequence[int] = (1024, 1024, 1024),
                 grid: Tuple[int, int] = (24, 24), pos_grid: Optional[Tuple[int, int]] = None):
        super().__init__()
        self.out_dim = out_dim
        self.grid = (int(grid[0]), int(grid[1]))  # the token grid
        self.pos_grid = self.grid if pos_grid is None else (int(pos_grid[0]), int(pos_grid[1]))
        if min(self.pos_grid) < 1:
            raise ValueError(f"the decoder's position grid must be at least 1x1, got {self.pos_grid}")
        dims = [slot_dim, *hidden, out_dim + 1]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for layer in self.layers:
            nn.init.zeros_(layer.bias)
        self.pos_emb = nn.Parameter(torch.randn(self.pos_grid[0] * self.pos_grid[1], slot_dim)
                                    * slot_dim ** -0.5)

    def position_embedding(self, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """(N, D) position embedding on `grid` (default: the token grid), resampled bicubically from the learned
        `pos_grid` where the two differ."""
        grid = self.grid if grid is None else tuple(grid)
        if grid == self.pos_grid:
            return self.pos_emb
        h, w = self.pos_grid
        pe = self.pos_emb.t().reshape(1, -1, h, w)
        pe = F.interpolate(pe, size=tuple(grid), mode="bicubic", align_corners=False)
        return pe.reshape(pe.shape[1], -1).t()

    def forward(self, slots: torch.Tensor, masks_only: bool = False,
                grid: Optional[Tuple[int, int]] = None, masks: Optional[torch.Tensor] = None,
                token_index: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """slots (B, K, D) -> {"masks": (B, K, N), "reconstruction": (B, N, F)}.

        masks_only: skip the F feature columns of the last layer; only "masks" is returned.
        masks: (B, K, N) masks from elsewhere (slot attention's) that weigh the slots' features in place of
            the softmax of the alphas; they are returned as "masks".
        token_index: (n,) decode only these patches (N becomes n): every patch is decoded on its own, so a
            random subset gives an unbiased estimate of the reconstruction loss at n / N of the cost.
        """
        pos = self.position_embedding(grid)  # (N, D)
        if token_index is not None:
            pos = pos[token_index]
        last = len(self.layers) - 1
        x = None
        for i, layer in enumerate(self.layers):
            w, b = layer.weight, layer.bias
            if masks_only and i == last:
                w, b = w[-1:], b[-1:]  # only the alpha row
            if i == 0:
                x = F.linear(slots, w).unsqueeze(2) + F.linear(pos, w, b)  # (B, K, N, H1)
            else:
                x = F.linear(F.relu(x), w, b)  # (B, K, N, H_i)
        if masks_only:
            return {"masks": x.squeeze(-1).softmax(dim=1)}  # (B, K, N)
        features, alpha = x[..., :-1], x[..., -1]  # (B, K, N, F), (B, K, N)
        if masks is None:
            masks = alpha.softmax(dim=1)  # softmax over slots
        reconstruction = torch.einsum("bknf,bkn->bnf", features, masks)  # (B, N, F)
        return {"masks": masks, "reconstruction": reconstruction}
