"""Slot attention (Locatello et al. 2020, Sec. 2.1) as used by SlotContrast (the "grouper").

Checked against martius-lab/slotcontrast `modules/groupers.py::SlotAttention`:
- LayerNorm on the inputs, then k, v = Linear(no bias); q = Linear(no bias)(LayerNorm(slots));
- logits scaled by kvq_dim ** -0.5, softmax over the *slots*; the attention returned as masks is
  this softmax; for the update it is renormalised over the inputs after adding eps = 1e-8;
- GRUCell(update, hidden) then a residual MLP (LayerNorm -> Linear(D, 4D) -> ReLU -> Linear(4D, D)).
  Note: in SlotContrast the GRU's hidden state is the *layer-normed* slots (the norm overwrites the
  slots before the GRU); the original paper uses the un-normed slots. We follow SlotContrast.
- SlotContrast: 2 iterations per frame, 3 on the first frame (`first_step_corrector_args`).

`implicit=True` (Chang et al. 2022, "Object representations as fixed points") detaches the slots
before the last iteration: an option for faster, steadier training, off by default.
`logits="distance"` scores slot k for input n by -||q_k - k_n||^2 / 2 instead of q_k . k_n (the E-step
of k-means, or of a Gaussian mixture with one shared variance, as the Slot Mixture Module of Kirilenko
et al. 2024 without its weights and variances): an input goes to the slot whose query is nearest, not
to the one with the largest projection. Off by default (the papers use the dot product).
Every operation acts per slot or symmetrically over slots, so the module is permutation-equivariant
in the slots.
"""

from typing import Optional, Tuple

import torch
from torch import nn

LOGITS = ("dot", "distance")


class SlotAttention(nn.Module):
    """Iterative competitive attention of K slots over N input tokens.

    forward(slots (B, K, D), inputs (B, N, dim_in), iters=None) -> (slots (B, K, D), attn (B, K, N))
    with attn the softmax over slots of the last iteration.
    """

    def __init__(self, dim_in: int, slot_dim: int, iters: int = 2, mlp_hidden: Optional[int] = None,
                 eps: float = 1e-8, implicit: bool = False, logits: str = "dot"):
        super().__init__()
        assert iters >= 1
        if logits not in LOGITS:
            raise ValueError(f"slot attention logits must be one of {LOGITS}, got {logits!r}")
        self.logits = logits
        self.iters = iters
        self.eps = eps
        self.implicit = implicit
        self.scale = slot_dim ** -0.5
        self.norm_inputs = nn.LayerNorm(dim_in)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_k = nn.Linear(dim_in, slot_dim, bias=False)
        self.to_v = nn.Linear(dim_in, slot_dim, bias=False)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        hidden = mlp_hidden or 4 * slot_dim
        self.mlp = nn.Sequential(nn.LayerNorm(slot_dim), nn.Linear(slot_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, slot_dim))
        for layer in (self.mlp[1], self.mlp[3]):
            nn.init.zeros_(layer.bias)

    def step(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """One iteration. slots (B, K, D), k/v (B, N, D) -> slots (B, K, D), attn (B, K, N)."""
        B, K, D = slots.shape
        slots = self.norm_slots(slots)
        q = self.to_q(slots)
        logits = torch.einsum("bkd,bnd->bkn", q, k)
        if self.logits == "distance":  # -|q - k|^2 / 2 up to -|k|^2 / 2, the same for every slot
            logits = logits - 0.5 * q.pow(2).sum(-1, keepdim=True)
        logits = logits * self.scale
        attn = logits.softmax(dim=1)  # (B, K, N) softmax over slots: the competition
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over inputs
        updates = torch.einsum("bkn,bnd->bkd", weights, v)
        slots = self.gru(updates.reshape(B * K, D), slots.reshape(B * K, D)).reshape(B, K, D)
        slots = slots + self.mlp(slots)
        return slots, attn

    def forward(self, slots: torch.Tensor, inputs: torch.Tensor, iters: Optional[int] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """slots (B, K, D) initial slots, inputs (B, N, dim_in) -> (B, K, D) slots, (B, K, N) attn."""
        iters = self.iters if iters is None else iters
        x = self.norm_inputs(inputs)
        k, v = self.to_k(x), self.to_v(x)  # (B, N, D)
        for i in range(iters):
            if self.implicit and i == iters - 1:
                slots = slots.detach()
            slots, attn = self.step(slots, k, v)
        return slots, attn
