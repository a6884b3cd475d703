"""The training loop: AdamW, EMA, lr schedule, early stopping, two stages, resume.

One epoch: the global batches of :func:`~atomshard.train.parallel.epoch_batches`, each
rank training on its shard, gradients summed by
:class:`~atomshard.train.parallel.GradientSync`, one AdamW step and one EMA update per
batch; then validation with the EMA weights (error sums all-reduced), the scheduler
step on the weighted validation loss, best/last checkpoints (rank 0, atomic) and a CSV
row. ``last.pt`` holds everything a resume needs (raw and EMA weights, optimiser,
scheduler, counters, history), and the data order depends only on ``(seed, epoch)``, so
a resumed run repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atomshard.comm import Communicator, NullCommunicator
from atomshard.errors import InputError
from atomshard.models.allegro import AllegroConfig, AllegroPotential
from atomshard.models.checkpoint import read_checkpoint, save_checkpoint
from atomshard.models.potential import NequIPConfig, NequIPPotential
from atomshard.train.batch import collate, predict_batch
from atomshard.train.config import RecipeConfig, cosine_lr
from atomshard.train.data import LabelledStructure
from atomshard.train.ema import WeightAverage
from atomshard.train.loss import LossWeights, error_sums, summarise
from atomshard.train.metrics import METRICS_FILE, write_metrics
from atomshard.train.parallel import (
    ForceModel,
    GradientSync,
    backward_to_parameters,
    epoch_batches,
    shard,
    shard_loss,
)
from atomshard.train.resume import read_training_checkpoint, restore_training, training_payload
from atomshard.utils.dtypes import parse_dtype
from atomshard.utils.signals import StopOnSigterm

CSV_FIELDS = (
    "epoch", "stage", "lr", "train_loss", "val_loss",
    "val_energy_mae", "val_energy_rmse", "val_force_mae", "val_force_rmse",
    "val_stress_mae", "val_stress_rmse", "time_s",
)  # fmt: skip


@dataclass
class TrainState:
    """Counters saved in ``last.pt`` (besides the weights and optimiser state)."""

    epoch: int = 0
    stage: int = 1
    stage_epoch: int = 0
    best_metric: float = math.inf
    bad_epochs: int = 0
    elapsed_s: float = 0.0
    finished: bool = False
    #: :func:`data_fingerprint` of the training set (a resume compares it)
    data_fingerprint: str = ""
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class TrainResult:
    """Outcome of :func:`train_potential` (meaningful on rank 0)."""

    epochs_run: int
    best_metric: float
    stop_reason: str
    history: list[dict[str, float]]
    output: Path
    #: stopped by SIGTERM after a step (``last.pt`` holds the state to resume from)
    interrupted: bool = False


def stage_weights(recipe: RecipeConfig, stage: int) -> LossWeights:
    """Loss weights of stage 1 or 2."""
    if stage == 1:
        return LossWeights(recipe.energy_weight, recipe.force_weight, recipe.stress_weight)
    return LossWeights(recipe.stage2_energy_weight, recipe.stage2_force_weight,
                       recipe.stress_weight)  # fmt: skip


def scheduled_lr(recipe: RecipeConfig, stage: int, stage_epoch: int) -> float | None:
    """The lr of epoch ``stage_epoch`` (0-based) of ``stage`` set by the schedule (warm-up,
    cosine), or None where ReduceLROnPlateau decides (``lr_schedule="plateau"`` after the
    warm-up)."""
    base = recipe.lr if stage == 1 else recipe.stage2_lr
    warm = recipe.warmup_epochs if stage == 1 else 0
    if stage_epoch < warm:
        return base * (stage_epoch + 1) / warm
    if recipe.lr_schedule != "cosine":
        return None
    span = (recipe.max_epochs if stage == 1 else recipe.stage2_epochs) - warm
    return cosine_lr(base, recipe.min_lr, stage_epoch - warm, span)


def data_fingerprint(samples: Sequence[LabelledStructure]) -> str:
    """A short hash of a training set: its frames' species, positions, cells and labels,
    in order."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for s in samples:
        st = s.structure
        for arr in (st.species, st.positions, st.cell):
            digest.update(np.ascontiguousarray(arr).tobytes())
        energy = None if s.energy is None else np.array([s.energy])
        for label in (energy, s.forces, s.stress):
            digest.update(b"-" if label is None else np.ascontiguousarray(label).tobytes())
    return digest.hexdigest()[:16]


def _names(samples: Sequence[LabelledStructure], most: int = 3) -> str:
    shown = ", ".join(s.source for s in samples[:most])
    return shown + (f" and {len(samples) - most} more" if len(samples) > most else "")


def _stages(recipe: RecipeConfig) -> list[int]:
    return [1, 2] if recipe.stage2_epochs > 0 else [1]


def check_loss_terms(train_set: Sequence[LabelledStructure], recipe: RecipeConfig) -> None:
    """Refuse a recipe whose loss (in some stage) has no term any training frame has
    the label of.

    Raises:
        InputError: naming the stage, its weights and the labels the frames carry.
    """
    import numpy as np

    has = {
        "energy": any(s.energy is not None for s in train_set),
        "force": any(s.forces is not None for s in train_set),
        "stress": any(
            s.stress is not None
            and bool(np.all(s.structure.pbc))
            and abs(float(np.linalg.det(s.structure.cell))) > 0
            for s in train_set
        ),
    }
    for stage in _stages(recipe):
        w = stage_weights(recipe, stage)
        weighted = {"energy": w.energy, "force": w.force, "stress": w.stress}
        if not any(weighted[k] > 0 and has[k] for k in has):
            labels = ", ".join(k for k in has if has[k]) or "none"
            raise InputError(
                f"training stage {stage}: no loss term has data (weights energy={w.energy}, "
                f"force={w.force}, stress={w.stress}; labels in the {len(train_set)} "
                f"training frames: {labels})"
            )


def data_warnings(train_set: Sequence[LabelledStructure], recipe: RecipeConfig) -> list[str]:
    """One-line notes on training data the recipe cannot use in full (each a warning)."""
    out = []
    no_energy = [s for s in train_set if s.energy is None]
    energy_used = any(stage_weights(recipe, k).energy > 0 for k in _stages(recipe))
    if no_energy and energy_used:
        if len(no_energy) == len(train_set):
            out.append(
                f"none of the {len(train_set)} training frames has a reference energy "
                f"({_names(no_energy)}): the energy term is empty, training on forces "
                "(and stress) only"
            )
        else:
            out.append(
                f"{len(no_energy)} of {len(train_set)} training frames have no reference "
                f"energy ({_names(no_energy)}): they enter the force (and stress) terms only"
            )
    no_forces = [s for s in train_set if s.forces is None]
    if no_forces and recipe.force_weight > 0:
        out.append(
            f"{len(no_forces)} of {len(train_set)} training frames have no forces "
            f"({_names(no_forces)}): they enter the energy (and stress) terms only"
        )
    if recipe.stress_weight > 0:
        no_stress = [s for s in train_set if s.stress is None]
        if no_stress:
            out.append(
                f"{len(no_stress)} of {len(train_set)} training frames have no stress "
                f"({_names(no_stress)}): they enter the energy and force terms only"
            )
    if recipe.batch_size > len(train_set):
        out.append(
            f"training.batch_size={recipe.batch_size} is larger than the {len(train_set)} "
            f"training frames: every step uses all {len(train_set)}"
        )
    return out


def early_stop_metric(row: dict[str, float]) -> float:
    """Mean of the validation per-atom-energy and force RMSEs (those present); where the
    validation frames have neither (stress-only labels), their stress RMSE, else the
    validation loss. Never inf for a finite validation: best.pt is always written."""
    values = [v for k in ("val_energy_rmse", "val_force_rmse")
              if (v := row.get(k, math.nan)) == v]  # fmt: skip
    if values:
        return sum(values) / len(values)
    for key in ("val_stress_rmse", "val_loss"):
        value = row.get(key, math.nan)
        if value == value and value is not None:
            return float(value)
    return math.inf


def _build_model(config: NequIPConfig | AllegroConfig) -> NequIPPotential | AllegroPotential:
    """The (randomly initialised) potential a config describes."""
    if isinstance(config, AllegroConfig):
        return AllegroPotential.from_config(config)
    return NequIPPotential.from_config(config)


class _Run:
    """State and steps of one training run on one rank."""

    def __init__(
        self,
        config: NequIPConfig | AllegroConfig,
        train_set: Sequence[LabelledStructure],
        valid_set: Sequence[LabelledStructure],
        recipe: RecipeConfig,
        output: Path,
        comm: Communicator,
        metadata: dict[str, Any],
        init_state: dict[str, torch.Tensor] | None,
    ) -> None:
        self.config = config
        self.train_set = [s.with_edges(config.cutoff) for s in train_set]
        self.valid_set = [s.with_edges(config.cutoff) for s in valid_set] or self.train_set
        self.recipe = recipe
        self.output = output
        self.comm = comm
        self.rank = int(getattr(comm, "rank", 0))
        self.world = int(getattr(comm, "world_size", 1))
        self.metadata = metadata
        torch.manual_seed(recipe.seed)
        self.model = _build_model(config)
        if init_state is not None:
            self.model.load_state_dict(init_state)
        self.needs_stress = recipe.stress_weight > 0
        low = parse_dtype(recipe.compute_dtype, what="compute_dtype")
        self.force_model = ForceModel(self.model, stress=self.needs_stress, compute_dtype=low)
        self.ema = WeightAverage(self.model, recipe.ema_decay)
        self.state = TrainState(data_fingerprint=data_fingerprint(self.train_set))
        self._new_optimiser(recipe.lr)
        #: SIGTERM watcher of the run (set by :func:`train_potential`); a stop is
        #: acted on after the optimisation step in progress
        self.stop: StopOnSigterm | None = None
        self.interrupted = False

    def _new_optimiser(self, lr: float) -> None:
        r = self.recipe
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, weight_decay=r.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=r.plateau_factor,
            patience=r.plateau_patience,
            threshold=r.plateau_threshold,
            min_lr=r.min_lr,
        )

    # -- checkpoints ------------------------------------------------------------------
    def _meta(self, row: dict[str, float] | None) -> dict[str, Any]:
        from atomshard.utils.config import config_to_dict

        return {
            **self.metadata,
            "recipe": config_to_dict(self.recipe),
            "epoch": self.state.epoch,
            "stage": self.state.stage,
            "metrics": dict(row or {}),
        }

    def save(self, name: str, row: dict[str, float] | None, *, training: bool) -> None:
        if self.rank != 0:
            return
        extra = None
        if training:  # the raw weights; the checkpoint's own weights are the averaged ones
            extra = {
                "training": training_payload(
                    model=self.model,
                    ema=self.ema,
                    optimizer=self.optimizer,
                    scheduler=self.scheduler,
                    state=vars(self.state),
                )
            }
        self.ema.swap(self.model)
        try:
            save_checkpoint(
                self.output / name,
                self.model,
                model_type="allegro" if isinstance(self.config, AllegroConfig) else "potential",
                config=self.config,
                metadata=self._meta(row),
                extra=extra,
            )
        finally:
            self.ema.swap(self.model)

    def resume(self, path: Path) -> None:
        training = read_training_checkpoint(path, self.config)["training"]
        stage = int(training["state"].get("stage", 1))
        self._new_optimiser(self.recipe.lr if stage == 1 else self.recipe.stage2_lr)
        st = restore_training(
            training,
            model=self.model,
            ema=self.ema,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
        )
        now = self.state.data_fingerprint
        self.state = TrainState(**st)
        if self.state.data_fingerprint and self.state.data_fingerprint != now:
            if self.rank == 0:
                warnings.warn(
                    f"resuming {path}: the training data differ from those it was trained on "
                    f"(fingerprint {self.state.data_fingerprint} -> {now}); continuing on "
                    "the data given now (epochs to come draw different batches)",
                    stacklevel=3,
                )
        self.state.data_fingerprint = now

    def apply_schedule(self) -> None:
        """Set this epoch's lr where the schedule fixes it (:func:`scheduled_lr`)."""
        lr = scheduled_lr(self.recipe, self.state.stage, self.state.stage_epoch)
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def step_scheduler(self, val_loss: float) -> None:
        """ReduceLROnPlateau after the epoch, unless the schedule sets the next lr."""
        if scheduled_lr(self.recipe, self.state.stage, self.state.stage_epoch) is None:
            self.scheduler.step(val_loss)

    # -- one epoch --------------------------------------------------------------------
    def train_epoch(self, sync: GradientSync, weights: LossWeights, bar: Any) -> float:
        r = self.recipe
        batches = epoch_batches(
            len(self.train_set), r.batch_size, seed=r.seed, epoch=self.state.epoch,
            world_size=self.world,
        )  # fmt: skip
        self.model.train()
        total = torch.zeros((), dtype=torch.float64)
        for indices in batches:
            global_batch = [self.train_set[i] for i in indices]
            loss = shard_loss(sync.forward_module, global_batch, self.rank, self.world, weights)
            self.optimizer.zero_grad(set_to_none=True)
            backward_to_parameters(loss * sync.loss_scale, sync.module)
            sync.after_backward()
            self.optimizer.step()
            self.ema.update(self.model)
            total += loss.detach().to(torch.float64)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3g}")
            if self.stop_requested():
                self.interrupted = True
                return math.nan
        total = self.comm.all_reduce_sum(total, what="train loss")
        return float(total) / len(batches)

    def stop_requested(self) -> bool:
        """Whether SIGTERM reached any rank (every rank gets the same answer)."""
        flag = self.stop is not None and self.stop.received
        if self.world == 1:
            return flag
        mine = torch.tensor([float(flag)], dtype=torch.float64)
        return bool(self.comm.all_reduce_max(mine, what="SIGTERM check")[0] > 0)

    def validate(self, weights: LossWeights) -> dict[str, float]:
        """Errors of the EMA weights on the validation set (each frame counted once)."""
        self.ema.swap(self.model)
        try:
            self.model.eval()
            sums = torch.zeros(9, dtype=torch.float64)
            mine = shard(list(range(len(self.valid_set))), self.rank, self.world)
            bs = max(self.recipe.batch_size, 1)
            for i in range(0, len(mine), bs):
                batch = collate([self.valid_set[k] for k in mine[i : i + bs]])
                pred = predict_batch(self.model, batch, forces=True, stress=self.needs_stress)
                sums += error_sums(pred, batch)
            sums = self.comm.all_reduce_sum(sums, what="validation errors")
        finally:
            self.ema.swap(self.model)
        return summarise(sums, weights)

    def write_csv(self) -> None:
        if self.rank == 0:
            write_metrics(self.output / METRICS_FILE, self.state.history, CSV_FIELDS)

    def start_stage2(self) -> None:
        """Continue from the best (EMA) weights with the stage-2 weights and lr."""
        best = read_checkpoint(self.output / "best.pt") if self.rank == 0 else None
        state = self.comm.broadcast_object(best["state_dict"] if best else None, src=0)
        self.model.load_state_dict(state)
        self.ema.reset(self.model)
        self._new_optimiser(self.recipe.stage2_lr)
        self.state.stage, self.state.stage_epoch, self.state.bad_epochs = 2, 0, 0


def train_potential(
    config: NequIPConfig | AllegroConfig,
    train_set: Sequence[LabelledStructure],
    valid_set: Sequence[LabelledStructure],
    recipe: RecipeConfig,
    output: str | Path,
    *,
    comm: Communicator | None = None,
    resume: bool = True,
    metadata: dict[str, Any] | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
    stop_after_epochs: int | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a :class:`NequIPPotential` (or an :class:`AllegroPotential`) built from
    ``config`` (see the module docstring).
    ``config`` (see the module docstring).

    Args:
        config: the architecture, statistics already folded in (shifts, scales, neighbours).
        train_set, valid_set: labelled structures; an empty ``valid_set`` validates on
            the training set.
        recipe: the training recipe.
        output: folder for ``best.pt``, ``last.pt``, ``metrics.csv``.
        comm: data-parallel communicator (serial when None).
        resume: continue from ``output/last.pt`` when it exists.
        metadata: extra checkpoint metadata (dataset statistics, data files).
        init_state: starting weights (fine-tuning) instead of a random initialisation.
        stop_after_epochs: stop (as if killed) after this many epochs of this call.
        on_epoch: called on rank 0 with each epoch's CSV row.
    """
    comm = comm or NullCommunicator()
    out = Path(output)
    check_loss_terms(train_set, recipe)
    run = _Run(config, train_set, valid_set, recipe, out, comm, dict(metadata or {}), init_state)
    if run.rank == 0:
        for note in data_warnings(run.train_set, recipe):
            warnings.warn(note, stacklevel=2)
    if resume and (out / "last.pt").exists():
        run.resume(out / "last.pt")
    out.mkdir(parents=True, exist_ok=True)
    sync = GradientSync(recipe.strategy, comm, run.force_model)
    show = recipe.progress and run.rank == 0
    reason = "finished" if run.state.finished else ""
    done_here = 0
    n_steps = len(epoch_batches(len(run.train_set), recipe.batch_size, seed=0, epoch=0,
                                world_size=run.world))  # fmt: skip
    stage_total = recipe.max_epochs + recipe.stage2_epochs
    outer = None
    if show:
        from tqdm import tqdm

        outer = tqdm(total=stage_total, initial=min(run.state.epoch, stage_total),
                     desc="train", unit="epoch")  # fmt: skip
    stop = StopOnSigterm().__enter__()
    run.stop = stop
    try:
        while not run.state.finished:
            st = run.state
            weights = stage_weights(recipe, st.stage)
            t0 = time.perf_counter()
            inner = None
            if show:
                from tqdm import tqdm

                inner = tqdm(total=n_steps, desc=f"epoch {st.epoch + 1}", leave=False,
                             unit="batch")  # fmt: skip
            run.apply_schedule()
            train_loss = run.train_epoch(sync, weights, inner)
            if inner is not None:
                inner.close()
            if run.interrupted:  # the epoch is not finished: it runs again on resume
                run.save("last.pt", None, training=True)
                reason = f"SIGTERM in epoch {st.epoch + 1}"
                if run.rank == 0:
                    print(
                        f"SIGTERM: stopped in epoch {st.epoch + 1} after a step; wrote "
                        f"{out / 'last.pt'} ({st.epoch} epochs done); the same command resumes"
                    )
                break
            val = run.validate(weights)
            st.epoch += 1
            st.stage_epoch += 1
            lr = run.optimizer.param_groups[0]["lr"]
            run.step_scheduler(val["loss"])  # for the epoch to come
            st.elapsed_s += time.perf_counter() - t0
            row = {
                "epoch": st.epoch, "stage": st.stage, "lr": lr, "train_loss": train_loss,
                "val_loss": val["loss"], "time_s": st.elapsed_s,
                # an error over no frames (no energies, no stress) is left out, not NaN
                **{f"val_{k}": v for k, v in val.items() if k.endswith(("mae", "rmse")) and v == v},
            }  # fmt: skip
            st.history.append(row)
            metric = early_stop_metric(row)
            if metric < st.best_metric - recipe.early_stop_delta:
                st.best_metric, st.bad_epochs = metric, 0
                run.save("best.pt", row, training=False)
            else:
                st.bad_epochs += 1
            limit = recipe.max_epochs if st.stage == 1 else recipe.stage2_epochs
            if st.bad_epochs >= recipe.early_stop_patience:
                reason = f"early stop (stage {st.stage})"
            elif st.stage_epoch >= limit:
                reason = f"max epochs (stage {st.stage})"
            elif recipe.max_time_s is not None and st.elapsed_s >= recipe.max_time_s:
                reason = "max time"
            else:
                reason = ""
            if reason and st.stage == 1 and recipe.stage2_epochs > 0 and reason != "max time":
                comm.barrier(what="best checkpoint written")
                run.start_stage2()
                reason = ""
            elif reason:
                st.finished = True
            run.save("last.pt", row, training=True)
            run.write_csv()
            if outer is not None:
                outer.update(1)
                outer.set_postfix(val_f_rmse=f"{row.get('val_force_rmse', math.nan):.3g}",
                                  lr=f"{lr:.1e}")  # fmt: skip
            if on_epoch is not None and run.rank == 0:
                on_epoch(row)
            done_here += 1
            if stop_after_epochs is not None and done_here >= stop_after_epochs:
                reason = reason or "stopped by caller"
                break
    finally:
        stop.__exit__(None, None, None)
        if outer is not None:
            outer.close()
    return TrainResult(
        epochs_run=run.state.epoch,
        best_metric=run.state.best_metric,
        stop_reason=reason,
        history=run.state.history,
        output=out,
        interrupted=run.interrupted,
    )
