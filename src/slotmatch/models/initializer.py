"""Learned, fixed per-slot initial slots (SlotContrast `modules/initializers.py::FixedLearnedInit`).

SlotContrast (and BO-QSA, Jia et al. 2023) learn one initial vector per slot index instead of sampling
slots from a Gaussian: slot k starts from the same query in every video, which makes slot indices
meaningful across videos (what SlotMatch's slot-to-slot distillation relies on). Init as SlotContrast:
N(0, 1) * dim ** -0.5.
"""

from typing import Optional

import torch
from torch import nn


class FixedLearnedInit(nn.Module):
    """A (K, D) parameter expanded to (B, K, D)."""

    def __init__(self, num_slots: int, dim: int, init_std: Optional[float] = None):
        super().__init__()
        init_std = dim ** -0.5 if init_std is None else init_std
        self.slots = nn.Parameter(torch.randn(num_slots, dim) * init_std)

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> (B, K, D) initial slots (a broadcast view of the parameter)."""
        return self.slots.unsqueeze(0).expand(batch_size, -1, -1)
