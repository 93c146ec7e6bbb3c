"""MCP (Shen et al. 2020, "Multiple-boundary clustering and prioritization to promote neural network retraining").

Samples are grouped by the decision boundary they are closest to -- their (top-1, top-2) class pair -- and picked
evenly across the groups, closest to the boundary (highest top-2/top-1 ratio) first. See
:func:`robustal.acquisition.scores.mcp_select`.
"""

from __future__ import annotations

import torch

from robustal.acquisition.base import Acquisition, SelectionContext, register_acquisition
from robustal.acquisition.scores import mcp_select


class MultipleBoundaryClustering(Acquisition):
    """Round-robin over (top-1, top-2) boundaries; each pick's score is its top-2/top-1 ratio."""

    def pick(self, ctx: SelectionContext, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        probs = ctx.predictions().probs
        pos = mcp_select(probs, n)
        top2 = torch.sort(probs[pos].double(), dim=1, descending=True, stable=True).values[:, :2]
        return pos, top2[:, 1] / top2[:, 0]


@register_acquisition("mcp")
def mcp_acquisition() -> Acquisition:
    """Balanced picks over (top-1, top-2) class-pair boundaries, highest top-2/top-1 ratio first (Shen et al. 2020)."""
    return MultipleBoundaryClustering()
