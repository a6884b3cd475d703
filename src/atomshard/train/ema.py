"""Exponential moving average of model weights (used for validation, saved, resumed)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightAverage:
    """EMA ``ā <- d ā + (1 - d) a`` of a model's floating-point parameters and buffers.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates so the
    first averages are not dominated by the random initial weights. ``decay = 0`` keeps
    the current weights (no averaging).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    @torch.no_grad()
    def swap(self, model: nn.Module) -> None:
        """Exchange the model's weights with the averaged ones (call again to undo)."""
        current = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        self.shadow = current

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Restart the average from the model's current weights."""
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}
