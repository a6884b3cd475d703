"""Configuration of potential training: the YAML schema is these dataclasses.

A training YAML has four sections::

    model:     {kind: potential, ...NequIPConfig fields...}   # or {kind: potential,
               #  init: sevennet-0 | CHECKPOINT.pt} to fine-tune
    data:      DataConfig
    training:  RecipeConfig
    output:    a folder (best.pt, last.pt, metrics.csv, PNGs)

Defaults of :class:`RecipeConfig` follow the Allegro/NequIP SI (AdamW lr 0.002, weight
decay 1e-6, EMA 0.999, 1:1 per-atom-energy:force MSE, ReduceLROnPlateau 0.8/10/1e-6/1e-7,
early stopping after 200 epochs without a 1e-9 improvement, at most 1000 epochs, second
stage 25:1 at lr 0.001) except the batch size (SI: 256 on 1.6 M structures; here 8).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from atomshard.errors import InputError

PRECISIONS = ("float32", "float64", "bfloat16")
STRATEGIES = ("allreduce", "ddp")
LR_SCHEDULES = ("plateau", "cosine")


def cosine_lr(start: float, end: float, epoch: int, epochs: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based) of a stage of ``epochs`` epochs: half a
    cosine from ``start`` (first epoch) to ``end`` (reached after the last epoch)."""
    low = min(end, start)
    frac = min(max(epoch, 0) / max(epochs, 1), 1.0)
    return low + 0.5 * (start - low) * (1.0 + math.cos(math.pi * frac))


def _bad(section: str, name: str, value: Any, why: str) -> InputError:
    return InputError(f"{section}.{name}={value!r}: {why}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the labelled structures come from and how they are split.

    Attributes:
        train: dataset file (extxyz, ASE ``.db``, n2p2 ``input.data``, other ASE formats).
        valid: optional separate validation file; otherwise ``valid_fraction`` of ``train``.
        valid_fraction, test_fraction: random split of ``train`` (seeded by ``split_seed``).
        split_file: YAML/JSON ``{train: [...], valid: [...], test: [...]}`` frame indices of
            ``train``, instead of the random split.
        format: force a reader (``extxyz``, ``db``, ``n2p2`` or an ASE format name).
        length_unit, energy_unit: units of n2p2 files (``bohr``/``hartree``/factors).
    """

    train: str
    valid: str | None = None
    valid_fraction: float = 0.1
    test_fraction: float = 0.0
    split_file: str | None = None
    split_seed: int = 0
    format: str | None = None
    length_unit: str | float | None = None
    energy_unit: str | float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.train, str) or not self.train:
            raise _bad("data", "train", self.train, "needs a dataset file")
        for name in ("valid_fraction", "test_fraction"):
            v = getattr(self, name)
            if not _number(v) or not 0 <= v < 1:
                raise _bad("data", name, v, "must be in [0, 1)")
        if self.split_file is not None and self.valid is not None:
            raise _bad("data", "split_file", self.split_file, "give split_file or valid, not both")


@dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    """The training recipe (defaults: the SI's, see the module docstring).

    Attributes:
        batch_size: structures per optimiser step (the global batch over all ranks).
        lr, weight_decay: AdamW.
        ema_decay: EMA of weights (used for validation and saved); 0 disables.
        energy_weight, force_weight, stress_weight: loss = w_E MSE(E/N) + w_F MSE(F)
            + w_S MSE(σ), per-atom energies in eV, forces eV/Å, stress eV/Å³.
        stage2_epochs: epochs of a second stage started from the best weights with
            ``stage2_energy_weight``/``stage2_force_weight`` and ``stage2_lr`` (0: none).
        lr_schedule: ``plateau`` (ReduceLROnPlateau on the weighted validation loss, the
            SI's) or ``cosine`` (from the stage's lr down to ``min_lr`` over the stage's
            epochs, ``max_epochs`` or ``stage2_epochs``, after any warm-up).
        warmup_epochs: stage 1 starts with this many epochs of linearly rising lr
            (``lr * (e + 1) / warmup_epochs`` in epoch ``e``); 0: none.
        plateau_factor, plateau_patience, plateau_threshold, min_lr: ReduceLROnPlateau on
            the weighted validation loss (``min_lr`` is also the end of the cosine).
        early_stop_patience, early_stop_delta: stop when the mean of the validation
            per-atom-energy and force RMSEs has not improved by ``delta`` for that many
            epochs.
        max_epochs, max_time_s: limits (epochs per stage; wall time over resumes).
        seed: initialisation and data order (epoch ``e`` shuffles with ``seed, e``).
        precision: network body ``float32`` (default), ``float64`` or ``bfloat16``;
            geometry and energies are always float64. ``bfloat16`` keeps float32 master
            weights (optimiser, EMA, checkpoints, validation) and runs the training
            forward/backward of the body in bf16 (see :class:`ForceModel`; plain
            ``torch.autocast`` fails on e3nn's compiled linears).
        ranks: data-parallel processes on this machine (gloo); under torchrun the world
            comes from the environment instead.
        strategy: ``allreduce`` (one all-reduce of all gradients after backward, the SI's
            custom DDP) or ``ddp`` (PyTorch DistributedDataParallel).
        threads: torch threads per rank (0: cores / ranks).
        progress: tqdm bars; plots: PNG learning curve and parity plots at the end.
    """

    batch_size: int = 8
    lr: float = 0.002
    weight_decay: float = 1e-6
    ema_decay: float = 0.999
    energy_weight: float = 1.0
    force_weight: float = 1.0
    stress_weight: float = 0.0
    stage2_epochs: int = 0
    stage2_energy_weight: float = 25.0
    stage2_force_weight: float = 1.0
    stage2_lr: float = 0.001
    lr_schedule: str = "plateau"
    warmup_epochs: int = 0
    plateau_factor: float = 0.8
    plateau_patience: int = 10
    plateau_threshold: float = 1e-6
    min_lr: float = 1e-7
    early_stop_patience: int = 200
    early_stop_delta: float = 1e-9
    max_epochs: int = 1000
    max_time_s: float | None = None
    seed: int = 0
    precision: str = "float32"
    ranks: int = 1
    strategy: str = "allreduce"
    threads: int = 0
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        ints = {
            "batch_size": 1,
            "stage2_epochs": 0,
            "warmup_epochs": 0,
            "plateau_patience": 0,
            "early_stop_patience": 1,
            "max_epochs": 1,
            "ranks": 1,
            "threads": 0,
            "seed": 0,
        }
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise _bad("training", name, v, f"must be an integer >= {low}")
        positive = ("lr", "stage2_lr")
        non_negative = (
            "weight_decay",
            "energy_weight",
            "force_weight",
            "stress_weight",
            "stage2_energy_weight",
            "stage2_force_weight",
            "plateau_threshold",
            "min_lr",
            "early_stop_delta",
        )
        for name in positive + non_negative:
            v = getattr(self, name)
            if not _number(v) or v < 0 or (name in positive and v == 0):
                raise _bad(
                    "training",
                    name,
                    v,
                    "must be a positive number" if name in positive else "must be a number >= 0",
                )
        if self.energy_weight + self.force_weight + self.stress_weight <= 0:
            raise _bad("training", "energy_weight", self.energy_weight, "all loss weights are 0")
        if not _number(self.ema_decay) or not 0 <= self.ema_decay < 1:
            raise _bad("training", "ema_decay", self.ema_decay, "must be in [0, 1)")
        if not _number(self.plateau_factor) or not 0 < self.plateau_factor < 1:
            raise _bad("training", "plateau_factor", self.plateau_factor, "must be in (0, 1)")
        if self.max_time_s is not None and (not _number(self.max_time_s) or self.max_time_s <= 0):
            raise _bad("training", "max_time_s", self.max_time_s, "must be positive or null")
        if self.precision not in PRECISIONS:
            raise _bad("training", "precision", self.precision, f"choose one of {PRECISIONS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise _bad("training", "lr_schedule", self.lr_schedule, f"choose one of {LR_SCHEDULES}")
        if self.warmup_epochs >= self.max_epochs:
            raise _bad("training", "warmup_epochs", self.warmup_epochs, "must be below max_epochs")
        if self.strategy not in STRATEGIES:
            raise _bad("training", "strategy", self.strategy, f"choose one of {STRATEGIES}")

    @property
    def body_dtype(self) -> str:
        """The model config's ``dtype`` for this precision (the stored weights)."""
        return "float64" if self.precision == "float64" else "float32"

    @property
    def compute_dtype(self) -> str | None:
        """The dtype the body trains in when it differs from :attr:`body_dtype`."""
        return "bfloat16" if self.precision == "bfloat16" else None
