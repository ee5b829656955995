"""Datasets: the masked `Batch` and its encoded `Tokens`, the in-memory `MultimodalData`, and the built-in loaders."""

from . import avmnist, basicmotions, formats, mosi, spsw_har, synthetic, utd_mhad  # noqa: F401  (register the loaders)
from .batch import Batch, collate
from .dataset import DataSpec, ModalitySpec, MultimodalData, Scaling, rescaled, standardize, stratified_split
from .npz import load_npz
from .registry import DATASETS, load_dataset
from .tokens import Tokens

__all__ = [
    "DATASETS",
    "Batch",
    "DataSpec",
    "ModalitySpec",
    "MultimodalData",
    "Scaling",
    "Tokens",
    "collate",
    "load_dataset",
    "load_npz",
    "rescaled",
    "standardize",
    "stratified_split",
]
