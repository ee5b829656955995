"""mmrobust: train and audit multimodal models that must keep working when modalities
go missing or get noisy.

    import mmrobust
    data = mmrobust.load_dataset("basicmotions")
    model = mmrobust.create_method("dropout", fusion="transformer")
    mmrobust.fit(model, data, seed=0)
    result = mmrobust.audit(model, data)
    result.table          # tidy DataFrame: one row per scenario x metric
"""

from .audit import AuditResult, audit, write_report
from .checkpoint import load_checkpoint, save_checkpoint
from .corruption import (
    Compose,
    Corruption,
    GaussianNoise,
    Missing,
    MissingRates,
    RandomDrop,
    RandomSubset,
    Subset,
    corruption_from_dict,
)
from .data import Batch, DataSpec, MultimodalData, collate, load_dataset, load_npz
from .errors import MMRobustError
from .methods import METHODS, Method, create_method, register_method
from .methods.external import wrap
from .train import FitResult, evaluate, fit, predict
from .version import __version__ as __version__

__all__ = [
    "METHODS",
    "AuditResult",
    "Batch",
    "Compose",
    "Corruption",
    "DataSpec",
    "FitResult",
    "GaussianNoise",
    "MMRobustError",
    "Method",
    "Missing",
    "MissingRates",
    "MultimodalData",
    "RandomDrop",
    "RandomSubset",
    "Subset",
    "audit",
    "collate",
    "corruption_from_dict",
    "create_method",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_dataset",
    "load_npz",
    "predict",
    "register_method",
    "save_checkpoint",
    "wrap",
    "write_report",
]
