"""A synthetic n2p2 potential folder using every supported symmetry-function type."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SF_LINES = [
    "{c} 2 H 0.5 0.0 4.0",
    "{c} 2 O 0.3 1.0 4.0",
    "{c} 3 H O 0.1 1.0 2.0 4.0 0.5",
    "{c} 3 O O 0.2 -1.0 1.0 4.0",
    "{c} 9 H H 0.1 -1.0 3.0 4.0",
    "{c} 9 O H 0.05 1.0 1.0 4.0 0.3",
    "{c} 12 0.2 0.5 4.0",
    "{c} 13 0.1 0.5 1.0 2.0 4.0",
    "{c} 20 O 0.5 4.0 p2",
    "{c} 20 H -4.0 4.0 p3a",
    "{c} 21 H O 0.5 4.0 20.0 160.0 p2",
    "{c} 21 H H -4.0 4.0 0.0 180.0 p1a",
    "{c} 22 O O -4.0 4.0 0.0 180.0 p4a",
    "{c} 22 H O 0.2 4.0 60.0 180.0 p2",
    "{c} 23 0.0 4.0 p1",
    "{c} 24 0.5 4.0 -90.0 90.0 p2",
    "{c} 25 -4.0 4.0 30.0 150.0 p3a",
]
#: The types of the fused native kernel (2, 3, 9, 12, 13).
NATIVE_SF_LINES = SF_LINES[:8]


def write_synthetic_potential(
    folder: Path,
    *,
    cutoff_type: str = "6 0.1",
    activations: str = "t p l",
    extra: str = "",
    seed: int = 0,
    sf_lines: list[str] | None = None,
) -> Path:
    """Write ``input.nn``, ``scaling.data`` and weights (Å, eV) into ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sf_lines = SF_LINES if sf_lines is None else sf_lines
    sf = "\n".join("symfunction_short " + line.format(c=c) for c in "HO" for line in sf_lines)
    (folder / "input.nn").write_text(
        "# Length unit : Angstrom\n# Energy unit : eV\n"
        "number_of_elements 2\nelements O H\n"
        f"cutoff_type {cutoff_type}\n"
        "scale_symmetry_functions\ncenter_symmetry_functions\n"
        "scale_min_short 0.0\nscale_max_short 1.0\n"
        "global_hidden_layers_short 2\nglobal_nodes_short 6 5\n"
        f"global_activation_short {activations}\n"
        "mean_energy -1.5\nconv_energy 2.0\nconv_length 1.3\natom_energy O -3.0\n"
        f"epochs 10\n{extra}\n{sf}\n"
    )
    n_sf = len(sf_lines)
    rows = []
    for e in (1, 2):
        for s in range(1, n_sf + 1):
            gmin, span = rng.uniform(0, 0.5), rng.uniform(0.5, 3.0)
            rows.append(f"{e} {s} {gmin} {gmin + span} {gmin + 0.4 * span} {0.3 * span}")
    (folder / "scaling.data").write_text("# scaling\n" + "\n".join(rows) + "\n")
    layers = [n_sf, 6, 5, 1]
    for z in (1, 8):
        lines, index = [], 1
        for ls in range(len(layers) - 1):
            for ns in range(1, layers[ls] + 1):
                for ne in range(1, layers[ls + 1] + 1):
                    w = rng.normal(0, 0.5)
                    lines.append(f"{w:.17e} a {index} {ls} {ns} {ls + 1} {ne}")
                    index += 1
            for ne in range(1, layers[ls + 1] + 1):
                lines.append(f"{rng.normal(0, 0.2):.17e} b {index} {ls + 1} {ne}")
                index += 1
        (folder / f"weights.{z:03d}.data").write_text("\n".join(lines) + "\n")
    return folder
