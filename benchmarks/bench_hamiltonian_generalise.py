"""Held-out accuracy of the SO(2) Hamiltonian model on PySCF data (issue 29).

Data: folders written by ``atomshard data pyscf-pbc`` or ``atomshard data pyscf``
(molecules; one structure per file). The
training folder is split **by structure** (``--n-val``, ``--n-test`` files held out, a
fixed permutation); ``--extra-test`` adds structures of another phase (e.g. the 64-atom
amorphous-like cells). For every test structure: node and edge block MAE and max error,
and band errors from the predicted H with the reference S at Γ, X, M, R (VBM, CBM, gap,
band-energy MAE within ±2 eV of the gap); also what the cutoff alone costs (the
reference itself truncated at the model cutoff). Molecules: HOMO, LUMO, gap and the MAE
of all occupied orbital energies (Γ only). ``--band-epochs N`` adds the trainer's second
stage with a loss on band energies; ``--continue-from RUN`` starts from OUT/RUN/last.pt
(a finished stage 1, or a run stopped by SIGTERM: ``--continue-from`` its own name
resumes it in place) instead of training from the start.

Modes:

* default: one training run with the given settings -> ``OUT/NAME/result.json``, plots
* ``--learning-curve 2,5,10,20``: the same with the first N training structures and the
  same number of optimisation steps each -> ``OUT/learning_curve.{json,png}``
* ``--seed-experiment TRAIN VAL TEST``: the seed's experiment in small — train on one
  (amorphous) cell, validate on another, predict a different structure TEST, then predict
  TEST tiled 2x2x2 with ``atomshard predict --ranks 1`` and ``--ranks 2`` and compare
  (blocks identical; errors against the tiled reference) -> ``OUT/NAME/seed.json``
* ``--smoke``: generates three 2-atom Si cells with PySCF and trains two epochs (tests)

    python benchmarks/bench_hamiltonian_generalise.py --data runs/ham/si8 \\
        --extra-test runs/ham/si64_amorphous --name envelope --edge-envelope 1.0 --out results/
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.hamiltonian.metrics import (
    DEFAULT_KPOINTS,
    band_errors,
    electrons_of,
    orbital_errors,
    within_cutoff,
)
from atomshard.models.hamiltonian import HamiltonianConfig
from atomshard.models.hamiltonian.data import Sample, expand_paths, load_samples
from atomshard.train.hamiltonian import TrainingConfig, block_errors, train

KPOINTS = DEFAULT_KPOINTS


def split_paths(
    paths: list[Path], n_val: int, n_test: int, seed: int = 0
) -> tuple[list[Path], list[Path], list[Path]]:
    """Train / validation / test files by structure (a fixed permutation)."""
    if n_val + n_test >= len(paths):
        raise SystemExit(f"{len(paths)} structures: cannot hold out {n_val} + {n_test}")
    order = np.random.default_rng(seed).permutation(len(paths)).tolist()
    test = sorted(paths[i] for i in order[:n_test])
    val = sorted(paths[i] for i in order[n_test : n_test + n_val])
    train_ = sorted(paths[i] for i in order[n_test + n_val :])
    return train_, val, test


def with_onsite_of(base: Any, donor: Any) -> Any:
    """``base`` (a BlockSet) with its on-site blocks (R = 0, i = j) taken from ``donor``."""
    from dataclasses import replace

    onsite = {
        int(p[3]): b
        for p, b in zip(donor.atom_pairs, donor.blocks, strict=True)
        if p[3] == p[4] and not p[:3].any()
    }
    blocks = tuple(
        onsite[int(p[3])] if p[3] == p[4] and not p[:3].any() else b
        for p, b in zip(base.atom_pairs, base.blocks, strict=True)
    )
    return replace(base, blocks=blocks)


def evaluate_structure(model: torch.nn.Module, sample: Sample, cutoff: float) -> dict[str, Any]:
    """Block errors (meV) and band errors (meV) of one held-out structure."""
    with torch.no_grad():
        pred = model(sample.graph)
    err = block_errors(pred, sample)
    src = sample.source
    h_ref, s_ref = src.matrices["H"], src.matrices["S"]
    n_el = electrons_of(src, sample.name)
    h_pred = pred.to_blockset(sample.graph)
    h_cut = within_cutoff(h_ref, src.positions, src.cell, cutoff)
    if src.pbc.any():
        bands = band_errors(h_pred, h_ref, s_ref, src.basis, n_el, KPOINTS)
        trunc = band_errors(h_cut, h_ref, s_ref, src.basis, n_el, KPOINTS)
        # which blocks carry the band error: only the on-site blocks predicted (the rest
        # the reference within the cutoff), or only the edges (reference on-site blocks)
        parts = {
            "onsite_only": band_errors(
                with_onsite_of(h_cut, h_pred), h_ref, s_ref, src.basis, n_el, KPOINTS
            ),
            "edges_only": band_errors(
                with_onsite_of(h_pred, h_ref), h_ref, s_ref, src.basis, n_el, KPOINTS
            ),
        }
    else:  # a molecule: orbital energies at Γ, named like the band edges
        orbs = [
            orbital_errors(h, h_ref, s_ref, src.basis, n_el)
            for h in (h_pred, h_cut, with_onsite_of(h_cut, h_pred), with_onsite_of(h_pred, h_ref))
        ]
        bands, trunc, onsite, edges = ({
            "vbm_ref": o["homo_ref"], "cbm_ref": o["lumo_ref"], "gap_ref": o["gap_ref"],
            "vbm_error": o["homo_error"], "cbm_error": o["lumo_error"],
            "gap_error": o["gap_error"], "band_mae_window": o["occupied_mae"],
            "band_max_window": o["occupied_max"], "n_bands_window": o["n_occupied"],
        } for o in orbs)  # fmt: skip
        parts = {"onsite_only": onsite, "edges_only": edges}
    out: dict[str, Any] = {
        "name": sample.name,
        "atoms": len(src.species),
        "node_mae_meV": 1000 * err["mae_node"],
        "edge_mae_meV": 1000 * err["mae_edge"],
        "mae_meV": 1000 * err["mae"],
        "node_max_meV": 1000 * err["max_node"],
        "edge_max_meV": 1000 * err["max_edge"],
        "beyond_cutoff_max_meV": 1000 * sample.uncovered_max,
        "periodic": bool(src.pbc.any()),
    }
    for k, v in bands.items():
        out[f"bands_{k}" if k.endswith("ref") or k == "n_bands_window" else f"{k}_meV"] = (
            v if k.endswith("ref") or k == "n_bands_window" else 1000 * v
        )
    for k in ("vbm_error", "cbm_error", "gap_error", "band_mae_window"):
        out[f"cutoff_only_{k}_meV"] = 1000 * trunc[k]
        for part, errs in parts.items():
            out[f"{part}_{k}_meV"] = 1000 * errs[k]
    return out


def run_one(
    args: argparse.Namespace,
    name: str,
    train_paths: list[Path],
    val_paths: list[Path],
    test_paths: list[Path],
    epochs: int,
) -> dict[str, Any]:
    from atomshard.models.checkpoint import load_model

    torch.set_num_threads(args.threads)
    train_s, basis = load_samples(train_paths, None, args.cutoff)
    val_s, _ = load_samples(val_paths, basis, args.cutoff)
    test_s, _ = load_samples(test_paths, basis, args.cutoff)
    shells = {el: "".join("spdfg"[l] for l in ls) for el, ls in basis.shells.items()}
    mcfg = HamiltonianConfig(
        basis=shells,
        cutoff=args.cutoff,
        channels=args.channels,
        hidden=args.hidden,
        n_layers=args.layers,
        l_max=args.l_max,
        edge_envelope=args.edge_envelope,
        edge_baseline=args.edge_baseline,
        node_baseline=args.node_baseline,
    )
    tcfg = TrainingConfig(
        epochs=epochs,
        lr=args.lr,
        ema_decay=args.ema,
        lr_schedule=args.lr_schedule,
        plateau_patience=args.patience,
        batch_size=args.batch_size,
        node_weight=args.node_weight,
        seed=args.seed,
        band_epochs=args.band_epochs,
        band_weight=args.band_weight,
        band_lr=args.band_lr,
        band_window=args.band_window,
    )
    out = Path(args.out) / name
    resume = False
    if args.continue_from:  # from another run's last.pt (its own name: resume in place)
        import shutil

        source = Path(args.out) / args.continue_from
        if source.resolve() != out.resolve():
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(source, out)
        resume = True
    t0 = time.perf_counter()
    result = train(mcfg, train_s, val_s, tcfg, out, resume=resume)
    seconds = time.perf_counter() - t0
    if result.interrupted:  # SIGTERM: last.pt is written; no evaluation of a partial run
        print(
            f"interrupted: {out}/last.pt holds {len(result.history)} epochs; resume with the "
            f"same command plus --continue-from {name}"
        )
        raise SystemExit(143)
    model = load_model(out / "best.pt")
    tests = [evaluate_structure(model, s, args.cutoff) for s in test_s]
    record = {
        "name": name,
        "settings": {k: v for k, v in vars(args).items() if not callable(v)},
        "model": {"cutoff": mcfg.cutoff, "l_max": mcfg.l_max, "channels": mcfg.channels},
        "n_train": len(train_s),
        "n_val": len(val_s),
        "train_files": [str(p) for p in train_paths],
        "val_files": [str(p) for p in val_paths],
        "epochs": epochs,
        "steps": epochs * -(-len(train_s) // args.batch_size),
        "train_seconds": seconds,
        "best_val_mae_meV": 1000 * result.best_val_mae,  # + band term in a band stage
        "band_epochs": args.band_epochs,
        "final_train_mae_meV": 1000 * result.history[-1]["train_mae"],
        "tests": tests,
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}), "
        f"{args.threads} thread(s), shared",
    }
    (out / "result.json").write_text(json.dumps(record, indent=1))
    plot_tests(out / "test_errors.png", tests, name)
    return record


def plot_tests(path: Path, tests: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [Path(t["name"]).parent.name + "/" + Path(t["name"]).stem for t in tests]
    x = np.arange(len(tests))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    molecules = not any(t.get("periodic", True) for t in tests)

    def ticks(ax: Any) -> None:
        if len(tests) <= 20:
            ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
        else:  # too many names to read: structures by index, in the JSON's order
            ax.set_xlabel("test structure (index in result.json)")

    ax = axes[0]
    ax.bar(x - 0.2, [t["node_mae_meV"] for t in tests], 0.4, label="node MAE")
    ax.bar(x + 0.2, [t["edge_mae_meV"] for t in tests], 0.4, label="edge MAE")
    ax.axhline(2.0, color="k", ls="--", lw=0.8, label="goal 2 meV")
    ax.set_ylabel("block MAE (meV)")
    ticks(ax)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: held-out blocks")
    ax = axes[1]
    names = ("HOMO", "LUMO", "occupied MAE") if molecules else ("VBM", "CBM", "band MAE ±2 eV")
    for key, lab in zip(("vbm_error_meV", "cbm_error_meV", "band_mae_window_meV"), names):
        ax.plot(x, [abs(t[key]) for t in tests], "o", ms=4, label=lab)
    cut = [abs(t["cutoff_only_band_mae_window_meV"]) for t in tests]
    if max(cut) > 0:
        ax.plot(x, cut, "k_", ms=12, label="cutoff alone (band MAE)")
    ax.axhline(20.0, color="k", ls="--", lw=0.8, label="goal 20 meV")
    ax.set_yscale("log")
    ax.set_ylabel("|error| (meV), " + ("orbitals at Γ" if molecules else "Γ X M R"))
    ticks(ax)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_train"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for key, lab in (
        ("in_phase", "held-out test structures (--data)"),
        ("other_phase", "--extra-test structures"),
    ):
        vals = [r.get(key) for r in rows]
        if any(v is not None for v in vals):
            ax.loglog(n, [v if v is not None else np.nan for v in vals], "o-", label=lab)
    ax.axhline(2.0, color="k", ls="--", lw=0.8, label="goal 2 meV")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, no crowded minor labels
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xticks(n)
    lo, hi = ax.get_ylim()
    ax.set_yticks([t for t in (0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100) if lo <= t <= hi])
    ax.set_xlabel("training structures")
    ax.set_ylabel("test block MAE (meV)")
    ax.set_title("same number of optimisation steps per size", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seed_experiment(args: argparse.Namespace, train_p: Path, val_p: Path, test_p: Path) -> None:
    """Train on one cell, predict another, and its 2x2x2 tiling on 1 and 2 ranks."""
    import subprocess
    import sys

    import h5py

    record = run_one(args, args.name, [train_p], [val_p], [test_p], args.epochs)
    out = Path(args.out) / args.name
    tiled: dict[str, Any] = {}
    for ranks in (1, 2):
        dest = out / f"tiled-{ranks}rank"
        cmd = [
            sys.executable,
            "-m",
            "atomshard",
            "predict",
            str(test_p),
            "--model",
            str(out / "best.pt"),
            "--out",
            str(dest),
            "--repeat",
            "2x2x2",
            "--ranks",
            str(ranks),
            "--threads",
            str(args.threads),
            "--no-plots",
        ]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if run.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
        tiled[f"{ranks}_rank_seconds"] = time.perf_counter() - t0
        tiled[f"{ranks}_rank_stdout"] = run.stdout.strip().splitlines()[-6:]
    blocks = []
    for ranks in (1, 2):
        (pred,) = sorted((out / f"tiled-{ranks}rank").glob("*.pred.h5"))
        with h5py.File(pred, "r") as f:
            blocks.append((f["H/atom_pairs"][()], f["H/entries"][()]))
    tiled["same_blocks"] = bool(np.array_equal(blocks[0][0], blocks[1][0]))
    tiled["max_abs_difference_eV"] = float(np.abs(blocks[0][1] - blocks[1][1]).max())
    tiled["n_blocks"] = len(blocks[0][0])
    record["tiled_2x2x2"] = tiled
    (out / "seed.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({"test": record["tests"], "tiled": tiled}, indent=1))


def smoke_data(work: Path) -> list[Path]:
    from ase.build import bulk

    from atomshard.hamiltonian.pyscf_pbc import PbcConfig, PbcDatasetConfig, generate_pbc_dataset

    cfg = PbcDatasetConfig(
        pbc=PbcConfig(ke_cutoff=12.0, block_cutoff=4.0, image_range=4.0),
        n_configs=3,
        rattle=0.05,
        strain=0.01,
    )
    generate_pbc_dataset([bulk("Si", "diamond", a=5.431)], work, cfg, log=lambda m: None)
    return expand_paths(str(work))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", help="folder of pyscf-pbc block files (split by structure)")
    p.add_argument("--extra-test", nargs="*", default=[], help="more test files / folders")
    p.add_argument(
        "--extra-train", nargs="*", default=[], help="more training files (after the split)"
    )
    p.add_argument("--n-val", type=int, default=4)
    p.add_argument("--n-test", type=int, default=6)
    p.add_argument("--name", default="run")
    p.add_argument("--out", default="bench-out/hamiltonian-generalise")
    p.add_argument("--cutoff", type=float, default=6.0)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--l-max", type=int, default=0, help="0: twice the basis' highest l")
    p.add_argument("--edge-envelope", type=float, default=0.0)
    p.add_argument("--edge-baseline", type=int, default=0, help="Gaussians (0: off)")
    p.add_argument("--node-baseline", type=int, default=0, help="Gaussians (0: off)")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--ema", type=float, default=0.99)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--lr-schedule", choices=("plateau", "cosine"), default="plateau")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--node-weight", type=float, default=1.0, help="loss weight of node elements")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--band-epochs", type=int, default=0, help="second stage with a band loss")
    p.add_argument("--band-weight", type=float, default=1.0)
    p.add_argument("--band-lr", type=float, default=1e-3)
    p.add_argument("--band-window", type=float, default=2.0, help="eV around the gap")
    p.add_argument(
        "--continue-from", default="", help="run name in OUT whose stage 1 the band stage uses"
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--learning-curve",
        default="",
        help="comma-separated training-set sizes; steps fixed to --epochs x the largest",
    )
    p.add_argument("--seed-experiment", nargs=3, metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="evaluate OUT/NAME/best.pt on --extra-test (-> OUT/NAME/extra.json)",
    )
    p.add_argument(
        "--average-of",
        nargs="+",
        metavar="RUN",
        help="with --evaluate-only: average the blocks of OUT/RUN/best.pt of these runs",
    )
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        paths = smoke_data(Path(args.out) / "smoke-data")
        args.cutoff, args.channels, args.hidden, args.layers = 4.0, 4, 8, 1
        record = run_one(args, "smoke", paths[:1], paths[1:2], paths[2:], 2)
        print(json.dumps(record["tests"], indent=1))
        return
    if args.evaluate_only:
        from atomshard.models.checkpoint import load_model

        torch.set_num_threads(args.threads)
        out = Path(args.out) / args.name
        if args.average_of:  # a committee of finished runs, written to OUT/NAME
            out.mkdir(parents=True, exist_ok=True)
            from atomshard.models.hamiltonian import HamiltonianCommittee

            paths = [Path(args.out) / r / "best.pt" for r in args.average_of]
            model: Any = HamiltonianCommittee(
                [load_model(p) for p in paths], [str(p) for p in paths]
            )
        else:
            model = load_model(out / "best.pt")
        samples, _ = load_samples(expand_paths(args.extra_test), model.basis, model.cutoff)
        tests = [evaluate_structure(model, s, model.cutoff) for s in samples]
        (out / "extra.json").write_text(json.dumps(tests, indent=1))
        print(json.dumps(tests, indent=1))
        return
    if args.seed_experiment:
        seed_experiment(args, *(Path(x) for x in args.seed_experiment))
        return
    if not args.data:
        raise SystemExit("--data is required (or --smoke, --seed-experiment)")
    train_p, val_p, test_p = split_paths(expand_paths(args.data), args.n_val, args.n_test)
    extra = expand_paths(args.extra_test) if args.extra_test else []
    if args.extra_train:
        train_p = train_p + expand_paths(args.extra_train)
    if not args.learning_curve:
        record = run_one(args, args.name, train_p, val_p, test_p + extra, args.epochs)
        for t in record["tests"]:
            print(
                f"{t['name']}: node {t['node_mae_meV']:.2f} edge {t['edge_mae_meV']:.2f} "
                f"max {max(t['node_max_meV'], t['edge_max_meV']):.1f} meV; VBM "
                f"{t['vbm_error_meV']:+.1f} CBM {t['cbm_error_meV']:+.1f} band MAE "
                f"{t['band_mae_window_meV']:.1f} meV (cutoff alone "
                f"{t['cutoff_only_band_mae_window_meV']:.1f})"
            )
        return
    sizes = [int(x) for x in args.learning_curve.split(",")]
    steps = args.epochs * max(sizes)
    rows = []
    for n in sizes:
        epochs = max(1, round(steps / n))
        rec = run_one(args, f"{args.name}-n{n}", train_p[:n], val_p, test_p + extra, epochs)
        same = [t for t in rec["tests"] if Path(t["name"]) in test_p]
        other = [t for t in rec["tests"] if Path(t["name"]) not in test_p]
        row = {
            "n_train": n,
            "epochs": epochs,
            "train_seconds": rec["train_seconds"],
            "in_phase": float(np.mean([t["mae_meV"] for t in same])) if same else None,
            "other_phase": float(np.mean([t["mae_meV"] for t in other])) if other else None,
        }
        rows.append(row)
        print(json.dumps(row))
        out = Path(args.out)
        (out / f"{args.name}_learning_curve.json").write_text(json.dumps(rows, indent=1))
        plot_learning_curve(out / f"{args.name}_learning_curve.png", rows)


if __name__ == "__main__":
    main()
