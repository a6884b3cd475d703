"""A small random SevenNet checkpoint in sevenn's own layout, for the importer and the
exports that start from a converted SevenNet checkpoint (needs the sevenn wheel)."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch


def small_sevenn_checkpoint(path: Path) -> Path:
    """A random small model in sevenn's current layout with its default NequIP choices
    (parity, species self-connection, polynomial cutoff) — unlike the pretrained ones:
    O and Si, 4 Å, 8 channels, l_max 2, 3 convolutions, saved as sevenn saves one."""
    import sevenn
    import sevenn._const as const
    import sevenn._keys as keys
    from sevenn.model_build import build_E3_equivariant_model

    cfg = copy.deepcopy(const.DEFAULT_E3_EQUIVARIANT_MODEL_CONFIG)
    cfg.update(
        {
            keys.CHEMICAL_SPECIES: ["O", "Si"],
            keys.NUM_SPECIES: 2,
            keys.TYPE_MAP: {8: 0, 14: 1},
            keys.CUTOFF: 4.0,
            keys.NODE_FEATURE_MULTIPLICITY: 8,
            keys.LMAX: 2,
            keys.NUM_CONVOLUTION: 3,
            keys.CONV_DENOMINATOR: 7.5,
            keys.SHIFT: [-3.0, -5.0],
            keys.SCALE: [1.3, 1.1],
            keys.RADIAL_BASIS: {keys.RADIAL_BASIS_NAME: "bessel", "bessel_basis_num": 6},
            keys.CUTOFF_FUNCTION: {keys.CUTOFF_FUNCTION_NAME: "poly_cut", "poly_cut_p_value": 5},
            "version": sevenn.__version__,
        }
    )
    torch.manual_seed(0)
    with warnings.catch_warnings():  # sevenn's and e3nn's own deprecation warnings
        warnings.simplefilter("ignore")
        model = build_E3_equivariant_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    torch.save({"config": cfg, "model_state_dict": model.state_dict()}, path)
    return path
