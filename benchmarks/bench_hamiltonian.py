"""Accuracy benchmark of the SO(2) Hamiltonian model.

* ``--system si64``: fit the DeePTB Si64 H(R) blocks (one structure, as in the issue),
  report node/edge MAE, Γ eigenvalue errors, VBM/CBM errors along Γ-X-M-Γ-R.
* ``--system ethanol``: PySCF (RKS PBE, sto-3g) on rattled ethanol, train on most,
  validate on the held-out ones: MAE and Γ eigenvalue errors (with the reference S).

Writes ``OUT/bench_hamiltonian_<system>.json`` and ``.png`` (learning curve and bands or
eigenvalue errors). ``--smoke`` runs two epochs on a tiny setting (seconds), for tests.

    python benchmarks/bench_hamiltonian.py --system si64 --epochs 300 --out results/
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.hamiltonian.assembly import band_structure
from atomshard.models.hamiltonian import HamiltonianConfig
from atomshard.models.hamiltonian.data import load_samples
from atomshard.train.hamiltonian import TrainingConfig, evaluate, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PATH = {"G": (0.0, 0.0, 0.0), "X": (0.5, 0.0, 0.0), "M": (0.5, 0.5, 0.0), "R": (0.5, 0.5, 0.5)}


def kpath(names: list[str], n_per: int) -> tuple[np.ndarray, np.ndarray, list[tuple[float, str]]]:
    pts, x, special, x0 = [], [], [(0.0, names[0])], 0.0
    for a, b in itertools.pairwise(names):
        ka, kb = np.array(PATH[a]), np.array(PATH[b])
        for t in np.linspace(0, 1, n_per, endpoint=False):
            pts.append(ka + t * (kb - ka))
            x.append(x0 + t * np.linalg.norm(kb - ka))
        x0 += float(np.linalg.norm(kb - ka))
        special.append((x0, b))
    pts.append(np.array(PATH[names[-1]]))
    x.append(x0)
    return np.array(pts), np.array(x), special


def ethanol_data(work: Path, n_configs: int) -> list[Path]:
    from ase.build import molecule

    from atomshard.hamiltonian.pyscf_data import DatasetConfig, PyscfConfig, generate_dataset

    cfg = DatasetConfig(pyscf=PyscfConfig(basis="sto-3g"), n_configs=n_configs, rattle=0.05)
    generate_dataset([molecule("CH3CH2OH")], work, cfg, log=print)
    return sorted(work.glob("*.h5"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", choices=["si64", "ethanol"], default="si64")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--cutoff", type=float, default=None, help="Å (si64 7.5, ethanol 5.0)")
    ap.add_argument("--n-configs", type=int, default=12, help="ethanol configurations")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--smoke", action="store_true", help="two epochs, tiny model")
    ap.add_argument(
        "--resume", action="store_true", help="continue (or just re-evaluate) OUT/run_SYSTEM"
    )
    args = ap.parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        # BLAS threads too: small dense eigensolves crawl when oversubscribed
        from threadpoolctl import threadpool_limits

        limits: Any = threadpool_limits(limits=args.threads)
    except ImportError:
        limits = contextlib.nullcontext()
    try:
        with limits:
            run(args)
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.epochs, args.channels, args.hidden, args.layers = 2, 4, 4, 1
    t_start = time.perf_counter()
    if args.system == "si64":
        cutoff = args.cutoff or (4.0 if args.smoke else 7.5)
        train_paths = [SHARED / "deeptb_Si64" / "Si64.0"]
        val_paths: list[Path] = []
    else:
        cutoff = args.cutoff or 5.0
        paths = ethanol_data(out / "ethanol_sto-3g", 3 if args.smoke else args.n_configs)
        n_val = max(1, len(paths) // 4)
        train_paths, val_paths = paths[:-n_val], paths[-n_val:]
    train_samples, basis = load_samples(train_paths, None, cutoff)
    val_samples, _ = load_samples(val_paths, basis, cutoff) if val_paths else ([], basis)
    model_cfg = HamiltonianConfig(
        basis={k: "".join("spdf"[v] for v in ls) for k, ls in basis.shells.items()},
        cutoff=cutoff,
        channels=args.channels,
        hidden=args.hidden,
        n_layers=args.layers,
    )
    train_cfg = TrainingConfig(epochs=args.epochs, lr=args.lr, plateau_patience=20, ema_decay=0.99)
    run_dir = out / f"run_{args.system}"
    t0 = time.perf_counter()
    result = train(
        model_cfg,
        train_samples,
        val_samples,
        train_cfg,
        run_dir,
        resume=args.resume,
        progress=lambda e, r: (
            print(
                f"epoch {e:4d} train MAE "
                f"{r['train_mae'] * 1e3:8.2f} meV, val MAE "
                f"{r['val_mae'] * 1e3:8.2f} meV, lr {r['lr']:.1e}",
                flush=True,
            )
            if e % 10 == 0 or e < 3
            else None
        ),
    )
    t_train = time.perf_counter() - t0
    from atomshard.models.checkpoint import load_model

    model = load_model(run_dir / "best.pt")
    eval_samples = val_samples or train_samples
    errors = evaluate(model, eval_samples)  # type: ignore[arg-type]
    figures: dict[str, object] = {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ep = [h["epoch"] for h in result.history]
    axes[0].semilogy(ep, [h["train_mae"] * 1e3 for h in result.history], label="train")
    axes[0].semilogy(ep, [h["val_mae"] * 1e3 for h in result.history], label="validation (EMA)")
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("MAE (meV)")
    axes[0].legend()
    eig_err = []
    for s in eval_samples:
        with torch.no_grad():
            pred = model(s.graph).to_blockset(s.graph)  # type: ignore[operator]
        s_blocks = s.source.matrices["S"]
        ref_h = s.source.matrices["H"]
        if args.system == "si64":
            names = ["G", "X"] if args.smoke else ["G", "X", "M", "G", "R"]
            k, x, special = kpath(names, 1 if args.smoke else 8)
            e_ref = band_structure(ref_h, s_blocks, basis, k)
            e_pred = band_structure(pred, s_blocks, basis, k)
            vbm_ref, cbm_ref = e_ref[:, 127].max(), e_ref[:, 128].min()
            vbm, cbm = e_pred[:, 127].max(), e_pred[:, 128].min()
            figures.update(
                gamma_ref=e_ref[0, [0, 127, 128]].tolist(),
                gamma_pred=e_pred[0, [0, 127, 128]].tolist(),
                vbm_error_meV=1e3 * float(vbm - vbm_ref),
                cbm_error_meV=1e3 * float(cbm - cbm_ref),
                band_mae_meV_path=1e3 * float(np.abs(e_pred - e_ref).mean()),
                band_mae_meV_window=1e3 * float(np.abs(e_pred - e_ref)[:, 96:160].mean()),
            )
            for n, (e, style) in enumerate(((e_ref, "-"), (e_pred, "--"))):
                lines = axes[1].plot(x, e[:, 96:160], style, color=f"C{n}", lw=0.8)
                lines[0].set_label("reference" if n == 0 else "model")
            axes[1].set_xticks([p for p, _ in special], [n for _, n in special])
            axes[1].set_ylim(vbm_ref - 4, cbm_ref + 4)
            axes[1].set_ylabel("energy (eV)")
            axes[1].legend()
        else:
            g = np.zeros((1, 3))
            e_ref = band_structure(ref_h, s_blocks, basis, g)[0]
            e_pred = band_structure(pred, s_blocks, basis, g)[0]
            eig_err.append(np.abs(e_pred - e_ref))
    if eig_err:
        allerr = np.concatenate(eig_err)
        figures.update(
            eigenvalue_mae_meV=1e3 * float(allerr.mean()),
            eigenvalue_max_meV=1e3 * float(allerr.max()),
        )
        axes[1].hist(np.log10(np.maximum(allerr * 1e3, 1e-3)), bins=30)
        axes[1].set_xlabel("log10 |eigenvalue error| (meV), held-out")
    fig.tight_layout()
    fig.savefig(out / f"bench_hamiltonian_{args.system}.png", dpi=110)
    report = {
        "system": args.system,
        "smoke": args.smoke,
        "device": "cpu",
        "threads": args.threads,
        "cpu_shared_with_other_jobs": True,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "n_atoms": int(train_samples[0].graph.n_atoms),
        "n_edges": int(train_samples[0].graph.n_edges),
        "n_train": len(train_samples),
        "n_valid": len(val_samples),
        "config": {
            "cutoff": cutoff,
            "channels": args.channels,
            "hidden": args.hidden,
            "layers": args.layers,
            "l_max": model_cfg.l_max,
            "epochs": args.epochs,
            "lr": args.lr,
        },
        "mae_meV": 1e3 * errors["mae"],
        "mae_node_meV": 1e3 * errors["mae_node"],
        "mae_edge_meV": 1e3 * errors["mae_edge"],
        "max_error_meV": 1e3 * max(errors["max_node"], errors["max_edge"]),
        "uncovered_max_meV": 1e3 * max(s.uncovered_max for s in eval_samples),
        "train_seconds": t_train,
        "seconds_per_epoch": float(np.median([h["seconds"] for h in result.history])),
        "total_seconds": time.perf_counter() - t_start,
        **figures,
    }
    (out / f"bench_hamiltonian_{args.system}.json").write_text(json.dumps(report, indent=1))
    for key, value in report.items():
        print(f"{key:22s} {value}")


if __name__ == "__main__":
    main()
