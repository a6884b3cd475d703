"""``atomshard train CONFIG.yaml``: train the model kind named in the config.

The YAML has ``model`` (with ``kind``: ``hamiltonian``; the rest are the model's config
fields, ``basis`` defaulting to the data's), ``data`` (``train``, ``valid`` or
``valid_fraction``), ``training`` (optimiser settings) and ``output`` (a folder).
``kind: potential`` trains an interatomic potential, ``kind: allegro`` an Allegro
potential (:mod:`atomshard.train.setup`; schema in docs/training.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from atomshard.errors import InputError

KINDS = ("hamiltonian", "potential", "allegro")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training configuration (YAML)")
    parser.add_argument("--output", "-o", default=None, help="override the config's output")
    parser.add_argument(
        "--no-resume", action="store_true", help="start afresh even if output/last.pt exists"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def _load_yaml(path: str) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError(f"config {path!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping at the top level")
    return data


def run(args: argparse.Namespace) -> int:
    import torch

    data = _load_yaml(args.config)
    model = data.get("model")
    if not isinstance(model, dict) or "kind" not in model:
        raise InputError(f"{args.config}: needs a 'model' mapping with 'kind' (one of {KINDS})")
    kind = model["kind"]
    if kind in ("potential", "allegro"):
        if args.threads:
            torch.set_num_threads(args.threads)
        return _train_potential(args, data)
    if kind != "hamiltonian":
        raise InputError(f"{args.config}: unknown model kind {kind!r}; known: {KINDS}")
    unknown = sorted(set(data) - {"model", "data", "training", "output"})
    if unknown:
        raise InputError(f"{args.config}: unknown top-level key(s) {unknown}")
    if args.threads:
        torch.set_num_threads(args.threads)
    return _train_hamiltonian(args, data)


def _train_hamiltonian(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from tqdm import tqdm

    from atomshard.models.hamiltonian.config import HamiltonianConfig
    from atomshard.models.hamiltonian.data import HamiltonianDataConfig, load_samples
    from atomshard.train.hamiltonian import TrainingConfig, train
    from atomshard.utils.config import config_from_dict

    where = args.config
    model_dict = {k: v for k, v in data["model"].items() if k != "kind"}
    data_cfg = config_from_dict(
        HamiltonianDataConfig, data.get("data") or {}, where=f"{where}: data"
    )
    train_cfg = config_from_dict(
        TrainingConfig, data.get("training") or {}, where=f"{where}: training"
    )
    output = args.output or data.get("output")
    if not output:
        raise InputError(f"{where}: give 'output' (a folder) or --output")
    train_paths, val_paths = data_cfg.split()
    cutoff = float(model_dict.get("cutoff", HamiltonianConfig.cutoff))
    basis = None
    if "basis" in model_dict:
        basis = HamiltonianConfig(basis=model_dict["basis"]).orbital_basis
    train_samples, basis = load_samples(train_paths, basis, cutoff)
    val_samples, _ = load_samples(val_paths, basis, cutoff) if val_paths else ([], basis)
    model_dict["basis"] = {k: list(v) for k, v in basis.shells.items()}
    model_cfg = config_from_dict(HamiltonianConfig, model_dict, where=f"{where}: model")
    print(
        f"training on {len(train_samples)} structures, validating on "
        f"{len(val_samples) or 'the training'} structures; basis {dict(model_cfg.basis)}"
    )
    total = train_cfg.epochs + train_cfg.band_epochs
    with tqdm(total=total, desc="train", unit="epoch") as bar:

        def progress(epoch: int, row: dict[str, float]) -> None:
            bar.n = epoch
            extra = {}
            if "val_band_mae" in row:
                extra["val_bands_meV"] = f"{row['val_band_mae'] * 1000:.1f}"
            bar.set_postfix(
                val_mae_meV=f"{row['val_mae'] * 1000:.2f}", **extra, lr=f"{row['lr']:.1e}"
            )
            bar.refresh()

        result = train(
            model_cfg,
            train_samples,
            val_samples,
            train_cfg,
            output,
            resume=not args.no_resume,
            progress=progress,
        )
    if result.interrupted:
        return 143  # SIGTERM: last.pt written (the trainer said so); 128 + 15 as a kill
    what = (
        f"best band-stage validation score (block MAE + {train_cfg.band_weight} x band MAE)"
        if train_cfg.band_epochs
        else "best validation MAE"
    )
    print(
        f"{result.epochs_run} epochs; {what} {result.best_val_mae * 1000:.3f} meV; "
        f"checkpoints in {output}/best.pt and last.pt"
    )
    return 0


def _train_potential(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from atomshard.comm import env_world
    from atomshard.train.setup import prepare, run_training

    world = env_world()  # under torchrun/srun every rank runs this: rank 0 alone reports
    say = print if world is None or world[0] == 0 else (lambda *a, **k: None)
    prepared = prepare(data, where=args.config, output=args.output)
    say(
        f"training on {len(prepared.train_set)} structures, validating on "
        f"{len(prepared.valid_set) or 'the training'} structures; species "
        f"{list(prepared.config.species)}, cutoff {prepared.config.cutoff} Å"
    )
    summary = run_training(prepared, resume=not args.no_resume)
    if summary is None:  # another rank of a torchrun/srun job: rank 0 reports
        return 0
    if summary["interrupted"]:
        return 143  # SIGTERM: last.pt written (the trainer said so); 128 + 15 as a kill
    say(
        f"{summary['epochs']} epochs ({summary['reason']}); best validation metric "
        f"{summary['best']:.6g}; checkpoints in {prepared.output}/best.pt and last.pt"
    )
    return 0
