"""Training interatomic potentials and the Hamiltonian model: datasets, statistics,
batching, the recipe, data parallelism, checkpoints with bit-identical resume,
fine-tuning and evaluation.

The entry point is :func:`atomshard.train.setup.train_from_config` (``atomshard train``);
the pieces are usable on their own. The Hamiltonian model trains with the same EMA
(:class:`~atomshard.train.ema.WeightAverage`) and gradient all-reduce
(:func:`~atomshard.train.parallel.sum_gradients`): serially in
:mod:`atomshard.train.hamiltonian`, graph-parallel on one structure in
:mod:`atomshard.train.hamiltonian_distributed`.
"""

from atomshard.train.batch import Batch, BatchPrediction, collate, predict_batch
from atomshard.train.config import DataConfig, RecipeConfig
from atomshard.train.data import LabelledStructure, read_dataset, split_indices
from atomshard.train.statistics import DatasetStatistics, compute_statistics
from atomshard.train.trainer import TrainResult, train_potential

__all__ = [
    "Batch",
    "BatchPrediction",
    "DataConfig",
    "DatasetStatistics",
    "LabelledStructure",
    "RecipeConfig",
    "TrainResult",
    "collate",
    "compute_statistics",
    "predict_batch",
    "read_dataset",
    "split_indices",
    "train_potential",
]
