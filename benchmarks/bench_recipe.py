"""Which learning-rate schedule reaches which accuracy how fast: the training recipe's
variants on one data set, model and epoch budget.

Every variant trains the same model from the same seed on the same split for the same
number of epochs (``atomshard train`` in a process of its own, 1 thread), and differs
only in the schedule:

* ``plateau``: ReduceLROnPlateau on the validation loss (the default, SI's);
* ``cosine``: cosine from ``lr`` down to ``min_lr`` over the epochs;
* ``warmup-cosine``: the first ``--warmup`` epochs with linearly rising lr, then cosine;
* ``plateau-stage2``: plateau for the first 3/4 of the epochs, then the automatic second
  stage from ``best.pt`` with energy:force weights 25:1 at ``stage2_lr``.

For each: the validation energy and force MAE of the EMA weights after every epoch
(``metrics.csv``) against the epoch and the wall seconds of training, the final and best
errors, and the epoch (and second) at which each variant first reached the default's
final errors. An epoch costs the same in every variant, so the epochs are the load-free
measure; the seconds move with the machine's load. Writes ``bench_recipe.json`` and
``bench_recipe.png`` (validation MAE against epoch, log-scaled).

    python benchmarks/bench_recipe.py --epochs 200 --out bench_out/recipe
    python benchmarks/bench_recipe.py --smoke --out /tmp/recipe
    python benchmarks/bench_recipe.py --table-from bench_out/recipe/bench_recipe.json --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WATER = HERE.parent.parent / "shared" / "data" / "n2p2" / "H2O_RPBE-D3" / "train" / "input.data"
VARIANTS = ("plateau", "cosine", "warmup-cosine", "plateau-stage2")


def _spec(variant: str, args: argparse.Namespace, out: Path) -> dict:
    training = {
        "batch_size": args.batch_size, "lr": args.lr, "max_epochs": args.epochs,
        "early_stop_patience": 10 * args.epochs, "threads": 1, "progress": False,
        "plots": False, "seed": 0,
    }  # fmt: skip
    if variant == "cosine":
        training["lr_schedule"] = "cosine"
    elif variant == "warmup-cosine":
        training.update(lr_schedule="cosine", warmup_epochs=args.warmup)
    elif variant == "plateau-stage2":
        stage2 = max(args.epochs // 4, 1)
        training.update(max_epochs=args.epochs - stage2, stage2_epochs=stage2)
    elif variant != "plateau":
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    return {
        "model": {"kind": "potential", "channels": args.channels, "l_max": args.l_max,
                  "n_layers": args.layers, "cutoff": args.cutoff},
        "data": {"train": str(args.data), "length_unit": "bohr", "energy_unit": "hartree",
                 "valid_fraction": 0.2},
        "training": training,
        "output": str(out / variant),
    }  # fmt: skip


def _curve(folder: Path) -> list[dict[str, float]]:
    """Per-epoch rows of ``metrics.csv``: seconds, validation energy MAE (meV/atom) and force
    MAE (meV/Å), the stage."""
    with open(folder / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for row in rows:
        out.append(
            {
                "epoch": int(row["epoch"]),
                "stage": int(row.get("stage") or 1),
                "seconds": float(row["time_s"]),
                "lr": float(row["lr"]),
                "energy_mae": 1e3 * float(row["val_energy_mae"]),
                "force_mae": 1e3 * float(row["val_force_mae"]),
            }
        )
    return out


def _first_reaching(
    curve: list[dict[str, float]], energy: float, force: float, key: str = "seconds"
) -> float | None:
    """``key`` (seconds or epoch) of the first row with both MAEs at or below the targets."""
    for row in curve:
        if row["energy_mae"] <= energy and row["force_mae"] <= force:
            return row[key]
    return None


def summarise(curves: dict[str, list[dict[str, float]]]) -> list[dict]:
    """Final and best errors of every variant, and when each first reached the first
    variant's final errors (epoch and seconds); prints the table."""
    first = next(iter(curves))
    reference = curves[first][-1]
    table = []
    for variant, curve in curves.items():
        last = curve[-1]
        table.append(
            {
                "variant": variant,
                "epochs": len(curve),
                "seconds": last["seconds"],
                "final_energy_mae": last["energy_mae"],
                "final_force_mae": last["force_mae"],
                "best_energy_mae": min(r["energy_mae"] for r in curve),
                "best_force_mae": min(r["force_mae"] for r in curve),
                f"reaches_{first}_final_s": _first_reaching(
                    curve, reference["energy_mae"], reference["force_mae"]
                ),
                f"reaches_{first}_final_epoch": _first_reaching(
                    curve, reference["energy_mae"], reference["force_mae"], "epoch"
                ),
            }
        )
    print(f"\nvariant           final E MAE   final F MAE   best E / F     reaches "
          f"{first}'s final after")  # fmt: skip
    for row in table:
        reach = row[f"reaches_{first}_final_s"]
        epoch = row[f"reaches_{first}_final_epoch"]
        print(
            f"{row['variant']:16s} {row['final_energy_mae']:8.2f}     {row['final_force_mae']:8.1f}"
            f"     {row['best_energy_mae']:.2f} / {row['best_force_mae']:.1f}    "
            + (f"epoch {epoch:.0f} ({reach:.0f} s)" if reach is not None else "never")
        )
    return table


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=WATER, help="n2p2 input.data (Bohr, Hartree)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.005)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--l-max", type=int, default=1)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--cutoff", type=float, default=4.0)
    p.add_argument("--out", type=Path, default=Path("bench-out/recipe"))
    p.add_argument("--smoke", action="store_true", help="4 epochs per variant")
    p.add_argument(
        "--table-from", type=Path, help="a bench_recipe.json: its table and plot again, no training"
    )
    args = p.parse_args(argv)
    if args.table_from:
        report = json.loads(args.table_from.read_text())
        report["table"] = summarise(report["curves"])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_recipe.json").write_text(json.dumps(report, indent=1))
        _plot(args.out / "bench_recipe.png", report["curves"])
        return report
    if args.smoke:
        args.epochs, args.warmup = 4, 2
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such data file (the n2p2 water set of ../shared/data)")
    args.out.mkdir(parents=True, exist_ok=True)
    curves: dict[str, list[dict[str, float]]] = {}
    for variant in args.variants:
        spec = _spec(variant, args, args.out)
        spec_file = args.out / f"{variant}.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        t0 = time.perf_counter()
        code = (
            "import json, sys; from atomshard.train.setup import prepare, run_training; "
            "spec = json.load(open(sys.argv[1])); "
            "run_training(prepare(spec, where=sys.argv[1]), resume=False)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, str(spec_file)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
        curves[variant] = _curve(Path(spec["output"]))
        last = curves[variant][-1]
        print(
            f"{variant:16s} {len(curves[variant])} epochs, {last['seconds']:.0f} s "
            f"(process {time.perf_counter() - t0:.0f} s): E MAE {last['energy_mae']:.2f} "
            f"meV/atom, F MAE {last['force_mae']:.1f} meV/Å",
            flush=True,
        )
    table = summarise(curves)
    report = {
        "benchmark": "bench_recipe",
        "data": str(args.data),
        "epochs": args.epochs,
        "model": {"channels": args.channels, "l_max": args.l_max, "n_layers": args.layers,
                  "cutoff": args.cutoff},
        "lr": args.lr,
        "batch_size": args.batch_size,
        "warmup_epochs": args.warmup,
        "table": table,
        "curves": curves,
    }  # fmt: skip
    (args.out / "bench_recipe.json").write_text(json.dumps(report, indent=1))
    _plot(args.out / "bench_recipe.png", curves)
    return report


def _plot(path: Path, curves: dict[str, list[dict[str, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant, curve in curves.items():
        epochs = [r["epoch"] for r in curve]
        axes[0].plot(epochs, [r["energy_mae"] for r in curve], label=variant)
        axes[1].plot(epochs, [r["force_mae"] for r in curve], label=variant)
    for ax, what in zip(axes, ("energy MAE (meV/atom)", "force MAE (meV/Å)")):
        ax.set_xlabel("epoch (the same cost in every variant)")
        ax.set_ylabel(f"validation {what}")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
