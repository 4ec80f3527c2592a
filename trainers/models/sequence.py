"""Which slots of left-aligned, padded sequences the sequence models read: each row's last entries, left-aligned
again (the Next-User model's user sequence, IHM's item history, SASRec's item sequence)."""

from __future__ import annotations

import torch


def tail_positions(lengths: torch.Tensor, width: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``width`` slots whose first ``lengths[b]`` hold entries: where each row's last ``size`` entries are.

    Returns ((B, size) source slots, clamped into [0, width - 1] so they can be gathered; (B,) kept lengths, at most
    ``size``; (B, size) bool, True for the slots that hold a kept entry)."""
    n = lengths.long().clamp(0, width)  # (B,)
    kept = n.clamp(max=size)  # (B,)
    slot = torch.arange(size, device=lengths.device)  # (size,)
    source = ((n - kept)[:, None] + slot[None, :]).clamp(max=max(width - 1, 0))  # (B, size)
    return source, kept, slot[None, :] < kept[:, None]
