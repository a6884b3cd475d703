"""Training the Hamiltonian model: L1+L2 on matrix elements, AdamW, ReduceLROnPlateau, EMA.

One optimisation step per ``batch_size`` structures (1 by default, as in the seed; several
structures' graphs are joined into one disjoint graph); the weight
average is the potentials' :class:`~atomshard.train.ema.WeightAverage`. Files written to
``output``: ``last.pt`` (everything needed to resume), ``best.pt`` (EMA weights with the
lowest validation MAE; loads with :func:`atomshard.models.checkpoint.load_model`),
``metrics.csv`` (one row per epoch) and ``learning_curve.png``, through the same
checkpoint layout and metrics path as the potential trainer (:mod:`atomshard.train.resume`,
:mod:`atomshard.train.metrics`). SIGTERM (a batch scheduler's warning) stops the run after
the optimisation step in progress: ``last.pt`` is written, the interrupted epoch runs again
in full on resume. Graph-parallel full-batch training on one structure:
:mod:`atomshard.train.hamiltonian_distributed`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomshard.errors import InputError
from atomshard.models.checkpoint import read_checkpoint, save_checkpoint
from atomshard.models.hamiltonian.config import HamiltonianConfig
from atomshard.models.hamiltonian.data import Sample, collate_samples
from atomshard.models.hamiltonian.heads import (
    BlockHead,
    RadialBaseline,
    fit_pair_sum_baseline,
    pair_sum_features,
)
from atomshard.models.hamiltonian.model import HamiltonianModel, HamiltonianPrediction
from atomshard.train.config import LR_SCHEDULES, cosine_lr
from atomshard.train.ema import WeightAverage
from atomshard.train.hamiltonian_bands import BandTarget, band_deviations, band_target
from atomshard.train.metrics import (
    HAMILTONIAN_PANELS,
    METRICS_FILE,
    plot_learning_curves,
    write_metrics,
)
from atomshard.train.resume import read_training_checkpoint, restore_training, training_payload
from atomshard.utils.signals import StopOnSigterm

__all__ = [
    "HamiltonianTrainResult",
    "TrainingConfig",
    "block_errors",
    "block_loss",
    "evaluate",
    "fit_output_statistics",
    "train",
]


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Optimisation settings.

    Attributes:
        epochs: passes over the training structures (one step per structure)
        lr: AdamW learning rate; weight_decay: AdamW decoupled decay
        l1_weight, l2_weight: loss = l1 * mean|ΔH| + l2 * mean(ΔH²), ΔH in eV
        ema_decay: exponential moving average of weights (0 disables)
        lr_schedule: ``plateau`` (ReduceLROnPlateau on the validation score) or ``cosine``
            (each stage's learning rate falls from its start to ``min_lr`` along half a
            cosine over the stage's epochs; no validation signal needed, so a noisy or
            slowly improving validation MAE cannot hold it at the start value)
        plateau_patience, plateau_factor, min_lr: ReduceLROnPlateau on validation MAE
            (``min_lr`` is also where the cosine ends)
        seed: initialisation and shuffling
        checkpoint_every: epochs between ``last.pt`` writes
        edge_chunk: edges per chunk in the model's layers and edge heads (0: all at once);
            bounds memory, results unchanged (:meth:`HamiltonianModel.set_memory`)
        activation_checkpoint: activation checkpointing per chunk of edges (activations
            recomputed in the backward pass: one extra forward of time, far less memory)
        batch_size: structures per optimisation step (their graphs joined into one,
            :func:`~atomshard.models.hamiltonian.data.collate_samples`; the loss is the
            element-weighted mean over all of them)
        node_weight: weight of on-site (node) elements in the loss relative to edge
            elements; at a long cutoff nodes are < 1 % of the elements
        band_epochs: epochs of an automatic second stage (0: none) that adds a loss on
            band energies (:mod:`atomshard.train.hamiltonian_bands`): it starts from the
            best weights of the first stage with a fresh AdamW at ``band_lr`` and a fresh
            plateau schedule; its validation score (best.pt, plateau) is block MAE +
            ``band_weight`` x band MAE. With a band stage the validation band MAE is
            logged from the first epoch on (stage 1 is still judged on blocks alone)
        band_weight: weight of the band term (``l1 * mean|Δε| + l2 * mean Δε²``, eV)
        band_lr: learning rate of the second stage
        band_window: bands within this many eV below the reference VBM and above the CBM
        band_kpoints: fractional k points of periodic structures (default Γ, X, M, R);
            molecules use Γ
    """

    epochs: int = 100
    lr: float = 5e-3
    weight_decay: float = 0.0
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    ema_decay: float = 0.99
    lr_schedule: str = "plateau"
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    min_lr: float = 1e-5
    seed: int = 0
    checkpoint_every: int = 1
    edge_chunk: int = 0
    activation_checkpoint: bool = False
    batch_size: int = 1
    node_weight: float = 1.0
    band_epochs: int = 0
    band_weight: float = 1.0
    band_lr: float = 1e-3
    band_window: float = 2.0
    band_kpoints: tuple[tuple[float, float, float], ...] | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "l1_weight": self.l1_weight >= 0,
            "l2_weight": self.l2_weight >= 0 and self.l1_weight + self.l2_weight > 0,
            "ema_decay": 0 <= self.ema_decay < 1,
            "lr_schedule": self.lr_schedule in LR_SCHEDULES,
            "plateau_patience": self.plateau_patience >= 0,
            "plateau_factor": 0 < self.plateau_factor < 1,
            "min_lr": self.min_lr >= 0,
            "checkpoint_every": self.checkpoint_every >= 1,
            "edge_chunk": self.edge_chunk >= 0,
            "batch_size": self.batch_size >= 1,
            "node_weight": self.node_weight >= 0,
            "band_epochs": self.band_epochs >= 0,
            "band_weight": self.band_weight > 0,
            "band_lr": self.band_lr > 0,
            "band_window": self.band_window >= 0,
            "band_kpoints": self.band_kpoints is None
            or (len(self.band_kpoints) > 0 and all(len(k) == 3 for k in self.band_kpoints)),
        }
        for name, ok in checks.items():
            if not ok:
                extra = f" (one of {', '.join(LR_SCHEDULES)})" if name == "lr_schedule" else ""
                raise InputError(
                    f"training.{name} has an invalid value {getattr(self, name)!r}{extra}"
                )


def fit_output_statistics(model: HamiltonianModel, samples: list[Sample]) -> None:
    """Set every head's ``shift`` (mean of its ``L = 0`` entries) and ``scale`` (RMS of the
    rest) from the training targets in the coupled basis; with ``edge_baseline`` first fit
    each edge pair's two-centre baseline and take the statistics of the remainder."""
    heads = [("node", model.node_heads), ("edge", model.edge_heads)]
    for kind, table in heads:
        for key, module in table.items():
            head = module
            assert isinstance(head, BlockHead)
            a, b = (int(v) for v in key.split("_"))
            blocks = [getattr(s, kind)[(a, b)][1] for s in samples if (a, b) in getattr(s, kind)]
            if not blocks:
                continue
            c = torch.cat(blocks).to(torch.float64)
            coupled = np.asarray(head.coupling.to_coupled(c.numpy()))
            if kind == "edge" and key in model.edge_baselines:
                # the fixed two-centre part first; statistics of what remains
                vec = torch.cat(
                    [
                        s.graph.edge_vectors().index_select(0, s.edge[(a, b)][0])
                        for s in samples
                        if (a, b) in s.edge
                    ]
                )
                baseline = model.edge_baselines[key]
                assert isinstance(baseline, RadialBaseline)
                baseline.fit(vec, torch.as_tensor(coupled))
                coupled = coupled - baseline(vec).numpy()
            if kind == "node" and model.node_baselines:
                coupled = coupled - _fit_node_baseline(model, a, samples, coupled)
            shift = np.zeros(coupled.shape[1])
            n0 = len(head.scalar_positions())
            shift[:n0] = coupled[:, :n0].mean(axis=0)
            rms = float(np.sqrt(np.mean((coupled - shift) ** 2)))
            head.shift.copy_(torch.as_tensor(shift))
            head.scale.fill_(max(rms, 1e-4))


def _fit_node_baseline(
    model: HamiltonianModel, z: int, samples: list[Sample], coupled: np.ndarray
) -> np.ndarray:
    """Fit element ``z``'s pair-sum node baselines to ``coupled`` (its nodes' targets in
    sample order); returns the baseline's values there."""
    zs = model.atomic_numbers
    bases: list[RadialBaseline] = []
    for b in zs:
        module = model.node_baselines[f"{z}_{b}"]
        assert isinstance(module, RadialBaseline)
        bases.append(module)
    feats: list[list[list[torch.Tensor]]] = [[] for _ in zs]
    for s in samples:
        if (z, z) not in s.node:
            continue
        idx = s.node[(z, z)][0]
        g = s.graph
        vec = g.edge_vectors()
        zd, zsrc = g.species.index_select(0, g.dst), g.species.index_select(0, g.src)
        for k, b in enumerate(zs):
            sel = torch.nonzero((zd == z) & (zsrc == b)).flatten()
            f = pair_sum_features(
                bases[k], vec.index_select(0, sel), g.dst.index_select(0, sel), g.n_atoms
            )
            feats[k].append([t.index_select(0, idx) for t in f])
    joined = [[torch.cat([p[e] for p in per]) for e in range(len(per[0]))] for per in feats]
    fit_pair_sum_baseline(bases, joined, torch.as_tensor(coupled))
    values = np.zeros_like(coupled)
    row = 0
    for s in samples:
        if (z, z) not in s.node:
            continue
        idx = s.node[(z, z)][0]
        fitted = model.node_baseline_values(s.graph)[z].index_select(0, idx)
        values[row : row + len(idx)] = fitted.numpy()
        row += len(idx)
    return values


def _pairs(pred: HamiltonianPrediction, sample: Sample):  # type: ignore[no-untyped-def]
    for kind in ("node", "edge"):
        got, want = getattr(pred, kind), getattr(sample, kind)
        for key, (_, target) in want.items():
            yield kind, key, got[key][1], target


def block_loss(pred: HamiltonianPrediction, sample: Sample, cfg: TrainingConfig) -> torch.Tensor:
    """``l1 * mean|ΔH| + l2 * mean ΔH²`` over every predicted matrix element (eV); node
    elements count ``cfg.node_weight`` times."""
    abs_sum = sq_sum = torch.zeros((), dtype=torch.float64)
    count = 0
    for kind, _, p, t in _pairs(pred, sample):
        d = p - t.to(p.device)
        w = cfg.node_weight if kind == "node" else 1.0
        abs_sum = abs_sum + w * d.abs().sum()
        sq_sum = sq_sum + w * d.pow(2).sum()
        count += d.numel()
    return (cfg.l1_weight * abs_sum + cfg.l2_weight * sq_sum) / max(count, 1)


def block_errors(pred: HamiltonianPrediction, sample: Sample) -> dict[str, float]:
    """Mean and max absolute errors (eV) of node and edge blocks, and both together."""
    sums = {"node": 0.0, "edge": 0.0}
    counts = {"node": 0, "edge": 0}
    worst = {"node": 0.0, "edge": 0.0}
    for kind, _, p, t in _pairs(pred, sample):
        d = (p.detach().cpu() - t).abs()
        sums[kind] += float(d.sum())
        counts[kind] += d.numel()
        worst[kind] = max(worst[kind], float(d.max()) if d.numel() else 0.0)
    out = {f"mae_{k}": sums[k] / max(counts[k], 1) for k in sums}
    out.update({f"max_{k}": worst[k] for k in worst})
    out["mae"] = sum(sums.values()) / max(sum(counts.values()), 1)
    out["n_elements"] = float(sum(counts.values()))
    return out


def evaluate(
    model: HamiltonianModel,
    samples: list[Sample],
    targets: dict[int, BandTarget] | None = None,
) -> dict[str, float]:
    """Element-weighted errors over several structures (eV); with band ``targets``
    (by ``id`` of the sample) also ``band_mae``, the mean |predicted - reference| band
    energy over the structures' windows, from the same forward pass."""
    totals: dict[str, float] = {}
    band_sum, band_count = 0.0, 0
    with torch.no_grad():
        for s in samples:
            pred = model(s.graph)
            e = block_errors(pred, s)
            n = e["n_elements"]
            for k, v in e.items():
                if k.startswith("max"):
                    totals[k] = max(totals.get(k, 0.0), v)
                elif k != "n_elements":
                    totals[k] = totals.get(k, 0.0) + v * n
            totals["n_elements"] = totals.get("n_elements", 0.0) + n
            if targets:
                (dev,) = band_deviations(pred, [s], [targets[id(s)]])
                band_sum += float(dev.abs().sum())
                band_count += dev.numel()
    n = max(totals.get("n_elements", 1.0), 1.0)
    out = {k: (v if k.startswith("max") or k == "n_elements" else v / n) for k, v in totals.items()}
    if targets:
        out["band_mae"] = band_sum / max(band_count, 1)
    return out


#: the columns of ``metrics.csv``
FIELDS = (
    "epoch", "stage", "lr", "train_loss", "train_mae", "val_mae", "val_mae_node",
    "val_mae_edge", "train_band_mae", "val_band_mae", "val_score", "seconds",
)  # fmt: skip


@dataclass
class HamiltonianTrainResult:
    epochs_run: int
    best_val_mae: float
    history: list[dict[str, float]] = field(default_factory=list)
    #: stopped by SIGTERM (``last.pt`` holds the state to resume from)
    interrupted: bool = False


def train(
    model_config: HamiltonianConfig,
    train_samples: list[Sample],
    val_samples: list[Sample],
    cfg: TrainingConfig,
    output: str | Path,
    *,
    resume: bool = True,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> HamiltonianTrainResult:
    """Train (or resume from ``output/last.pt``) and write checkpoints, CSV and curve."""
    if not train_samples:
        raise InputError("no training structures")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = HamiltonianModel(model_config)
    model.set_memory(edge_chunk=cfg.edge_chunk, checkpoint=cfg.activation_checkpoint)
    fit_output_statistics(model, train_samples)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
    )
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    start, best, history = 0, math.inf, []
    last = out / "last.pt"
    if resume and last.exists():
        data = read_training_checkpoint(last, model_config)
        training: dict[str, Any] = data["training"]
        if "state" not in training:  # written before the trainers shared one layout
            training = {
                "model": data["state_dict"],
                "ema": None if training.get("ema") is None else {
                    "decay": cfg.ema_decay, "updates": int(training["ema_updates"]),
                    "shadow": training["ema"],
                },
                "optimizer": training["optimizer"],
                "scheduler": training["scheduler"],
                "state": {k: training[k] for k in ("epoch", "best", "history")},
            }  # fmt: skip
        state = restore_training(training, model=model, ema=ema, optimizer=opt, scheduler=sched)
        start, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
    rng = np.random.default_rng([cfg.seed, start])
    total = cfg.epochs + cfg.band_epochs
    targets: dict[int, BandTarget] = {}
    if cfg.band_epochs > 0:  # fail before training if a structure cannot give bands
        kpts = None if cfg.band_kpoints is None else np.asarray(cfg.band_kpoints, float)
        for smp in [*train_samples, *val_samples]:
            targets[id(smp)] = band_target(smp, window=cfg.band_window, kpoints=kpts)

    def save_last(epochs_done: int) -> None:
        state = {"epoch": epochs_done, "best": best, "history": history}
        payload = training_payload(
            model=model, ema=ema, optimizer=opt, scheduler=sched, state=state
        )
        save_checkpoint(
            last, model, model_type="hamiltonian", config=model_config,
            extra={"training": payload},
        )  # fmt: skip

    def band_term(batch: list[Sample], pred: HamiltonianPrediction) -> tuple[torch.Tensor, float]:
        dev = torch.cat(band_deviations(pred, batch, [targets[id(x)] for x in batch]))
        loss = cfg.l1_weight * dev.abs().mean() + cfg.l2_weight * dev.pow(2).mean()
        return loss, float(dev.detach().abs().mean())

    def start_band_stage() -> None:
        """Stage 2: the best stage-1 weights, a fresh optimiser, schedule and best score."""
        nonlocal opt, sched, best, ema
        if (out / "best.pt").exists():
            model.load_state_dict(read_checkpoint(out / "best.pt")["state_dict"])
        ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.band_lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
        best = math.inf
        print(
            f"stage 2 (band energies, weight {cfg.band_weight}, lr {cfg.band_lr}) from the "
            f"best stage-1 weights for {cfg.band_epochs} epoch(s)"
        )

    metrics = out / METRICS_FILE
    write_metrics(metrics, history, FIELDS)  # a resumed run's table matches its last.pt
    with StopOnSigterm() as stop:
        for epoch in range(start, total):
            stage = 1 if epoch < cfg.epochs else 2
            if epoch == cfg.epochs:
                start_band_stage()
            if cfg.lr_schedule == "cosine":
                base, first, span = (
                    (cfg.lr, 0, cfg.epochs)
                    if stage == 1
                    else (cfg.band_lr, cfg.epochs, cfg.band_epochs)
                )
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(base, cfg.min_lr, epoch - first, span)
            t0 = time.perf_counter()
            model.train()
            losses, maes, band_maes = [], [], []
            order = rng.permutation(len(train_samples))
            for b in range(0, len(order), cfg.batch_size):
                batch = [train_samples[int(i)] for i in order[b : b + cfg.batch_size]]
                s = collate_samples(batch)
                pred = model(s.graph)
                loss = block_loss(pred, s, cfg)
                if stage == 2:
                    extra, band_mae = band_term(batch, pred)
                    loss = loss + cfg.band_weight * extra
                    band_maes.append(band_mae)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if ema is not None:
                    ema.update(model)
                losses.append(float(loss.detach()))
                maes.append(block_errors(pred, s)["mae"])
                if stop.received:
                    break
            if stop.received:  # the epoch is not finished: it runs again on resume
                save_last(epoch)
                print(
                    f"SIGTERM: stopped in epoch {epoch + 1} after a step; wrote {last} "
                    f"({epoch} epochs done); the same command resumes"
                )
                return HamiltonianTrainResult(
                    epochs_run=epoch - start, best_val_mae=best, history=history,
                    interrupted=True,
                )  # fmt: skip
            model.eval()
            if ema is not None:
                ema.swap(model)
            val_set = val_samples or train_samples
            val = evaluate(model, val_set, targets)
            row = {
                "epoch": epoch + 1,
                "stage": stage,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": float(np.mean(losses)),
                "train_mae": float(np.mean(maes)),
                "val_mae": val["mae"],
                "val_mae_node": val["mae_node"],
                "val_mae_edge": val["mae_edge"],
                "val_score": val["mae"],
                "seconds": 0.0,
            }
            if targets:  # logged in stage 1 too: the band stage's starting point
                row["val_band_mae"] = val["band_mae"]
            if stage == 2:
                row["train_band_mae"] = float(np.mean(band_maes))
                row["val_score"] = val["mae"] + cfg.band_weight * row["val_band_mae"]
            if row["val_score"] < best:
                best = row["val_score"]
                save_checkpoint(
                    out / "best.pt",
                    model,
                    model_type="hamiltonian",
                    config=model_config,
                    metadata={"epoch": epoch + 1, "stage": stage, **val},
                )
            if ema is not None:
                ema.swap(model)
            if cfg.lr_schedule == "plateau":
                sched.step(row["val_score"])
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            write_metrics(metrics, history, FIELDS)
            if (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 in (cfg.epochs, total):
                save_last(epoch + 1)
            if progress is not None:
                progress(epoch + 1, row)
    if history:
        plot_learning_curves(history, out / "learning_curve.png", HAMILTONIAN_PANELS)
    return HamiltonianTrainResult(epochs_run=total - start, best_val_mae=best, history=history)
