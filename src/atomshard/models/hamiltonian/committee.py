"""A committee of Hamiltonian models: the mean of the blocks of independently trained runs.

Runs that differ only in their seed (or data) scatter on held-out structures; their mean is
more accurate than a typical member (docs/hamiltonian.md, fourth round: Si8 band MAE
6.8 meV for three runs that alone give 6.9-13.7). Every member must share the orbital
basis and the cutoff, so their graphs and block layouts are the same. The committee takes
the halo exchange of the graph-parallel runtime like one model does: every rank runs the
members in the same order, each member's layers exchanging their halos, so
``atomshard predict --ranks N`` with several ``--model`` gives the same blocks as one
process.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from atomshard.errors import InputError
from atomshard.graph import AtomicGraph
from atomshard.hamiltonian.basis import OrbitalBasis
from atomshard.models.base import Exchange, identity_exchange
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction

__all__ = ["HamiltonianCommittee", "load_predictor"]


class HamiltonianCommittee(nn.Module):
    """Predicts the element-wise mean of the blocks of its members.

    Args:
        members: trained models with one orbital basis and one cutoff
        names: one label per member for error messages (e.g. checkpoint paths)
    """

    def __init__(self, members: Sequence[HamiltonianModel], names: Sequence[str] = ()) -> None:
        super().__init__()
        if not members:
            raise InputError("a committee needs at least one model")
        labels = list(names) if names else [f"model {k}" for k in range(len(members))]
        first = members[0]
        for label, m in zip(labels[1:], members[1:], strict=True):
            if m.cutoff != first.cutoff:
                raise InputError(
                    f"committee: {label} has cutoff {m.cutoff} Å, {labels[0]} has "
                    f"{first.cutoff} Å; members must share the cutoff"
                )
            if m.basis != first.basis:
                raise InputError(
                    f"committee: {label} has another orbital basis than {labels[0]} "
                    f"({m.basis.shells} against {first.basis.shells})"
                )
        self.members = nn.ModuleList(members)
        self.basis: OrbitalBasis = first.basis
        self.cutoff: float = first.cutoff
        self.eval()

    def set_memory(self, *, edge_chunk: int = 0, checkpoint: bool = False) -> None:
        for m in self.members:
            assert isinstance(m, HamiltonianModel)
            m.set_memory(edge_chunk=edge_chunk, checkpoint=checkpoint)

    def check_species(self, species: torch.Tensor, *, name: str = "structure") -> None:
        self.basis.check_species(species.cpu().numpy(), name=name)

    def forward(
        self, graph: AtomicGraph, exchange: Exchange = identity_exchange
    ) -> HamiltonianPrediction:
        preds = [m(graph, exchange) for m in self.members]
        mean: dict[str, dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]] = {}
        for kind in ("node", "edge"):
            mean[kind] = {}
            for key, (idx, _) in getattr(preds[0], kind).items():
                blocks = [getattr(p, kind)[key][1] for p in preds]
                stack = torch.stack([b.to(torch.float64) for b in blocks])
                mean[kind][key] = (idx, stack.mean(0).to(blocks[0].dtype))
        return HamiltonianPrediction(node=mean["node"], edge=mean["edge"])


def load_predictor(paths: Sequence[str]) -> HamiltonianModel | HamiltonianCommittee:
    """The model of one checkpoint, or the committee of several; a checkpoint that holds
    no Hamiltonian model is one error naming it."""
    from atomshard.models.checkpoint import load_model

    members = []
    for path in paths:
        net = load_model(path)
        if not isinstance(net, HamiltonianModel):
            raise InputError(f"{path} is not a Hamiltonian model")
        members.append(net)
    if len(members) == 1:
        return members[0]
    return HamiltonianCommittee(members, paths)
