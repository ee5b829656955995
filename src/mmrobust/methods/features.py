"""`features`: a non-deep reference floor, summary statistics per modality then a random forest.

Why: on small data (hundreds of samples, like UTD-MHAD's 431 training sequences) a deep default
can lose to hand-made features and trees; without this row a results table cannot show it
(issue 16, item 5). It runs on any dataset and any modality subset, with no recipe to tune.

- Features: `models.summary.summarize` per modality (per channel distribution, dynamics of time
  series, a coarse spatial grid of images, `mlp` vectors as they are), standardised with the
  train split's statistics over the samples where the modality is present. They are the tokens
  `encode` returns (zero-padded to the widest modality), so the audit's encode-once,
  fuse-under-every-mask path applies as to any model.
- Trees: a random forest (Breiman 2001, scikit-learn's `RandomForest*`) with the defaults of R's
  randomForest (Liaw & Wiener 2002): fully grown trees on sqrt(F) features per split for
  classification, F/3 features and 5 samples per leaf for regression. Chosen over gradient
  boosting on validation (scripts/features_model_choice.py: UTD-MHAD, one training subject left
  out in turn, all modalities): sklearn's GradientBoostingClassifier (100 depth-3 stages on sqrt(F)
  features) is never more accurate and about three times slower (docs/datasets.md has the
  numbers); HistGradientBoosting keeps its trees in private objects. The fitted trees are exported
  to tensors (`models.forest`), so checkpoints stay weights-only.
- Missing modalities: an absent modality's features are NaN, which sklearn's trees route
  natively (each split learns where missing values go). Training adds `copies` copies of the
  train set under `RandomDrop` (the corruption `dropout` trains under: K ~ U{0..P-1} of a
  sample's P modalities dropped), so the splits learn where samples without each modality go and
  every non-empty subset is predicted from what it has, including subsets never seen in training.
  More copies trade the complete set for the subsets. On UTD-MHAD validation (leave one training
  subject out, 4 folds, seed 0) the mean accuracy over the complete set and its 6 proper subsets is
  0.570 / 0.643 / 0.704 / 0.724 for 0 / 1 / 3 / 5 copies, the complete set's 0.870 / 0.861 / 0.833 /
  0.805; the default, 3, is that compromise (a recipe may choose otherwise on its own validation).
- Output: log-probabilities of the forest's class probabilities smoothed by `EPSILON` (a class no
  tree votes for stays finite), or the forest's mean for regression.

Fitted directly (`Stage.fit_direct`): `fit`'s epochs, batch size, learning rate, augmentation and
patience do not apply; the training loss and validation metrics are still recorded.
`label_smoothing` is accepted so that a recipe can give every method the same value: it enters
the reported loss only (the trees fit hard labels).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..corruption import RandomDrop
from ..data.batch import Batch
from ..data.dataset import DataSpec, MultimodalData
from ..data.tokens import Tokens
from ..errors import MMRobustError
from ..models.forest import Forest
from ..models.model import encode_present, modality_list, used_modalities
from ..models.summary import feature_count, summarize
from .base import EVERY_TASK, Method, MethodTags, Stage, register_method
from .losses import task_loss

EPSILON = 1e-4  # added to every class probability before the log (then renormalised)
CHUNK = 512  # samples summarised at a time while fitting


class SummaryModel(nn.Module):
    """Standardised summary features as tokens, and the forest that reads them side by side."""

    use_mask: Tensor  # (M,) bool: the modalities the model reads

    def __init__(self, spec: DataSpec, use: Sequence[str] | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.used = used_modalities(spec, use)
        self.counts = {m.name: feature_count(m.kind, m.shape) for m in spec.modalities if m.name in self.used}
        self.width = max(self.counts.values())
        shape = (len(spec.modalities), self.width)
        # the fitted standardisation; parameters (never trained) so that the model has a device like any
        self.mean = nn.Parameter(torch.zeros(shape), requires_grad=False)
        self.std = nn.Parameter(torch.ones(shape), requires_grad=False)
        classes = spec.num_classes if spec.task == "classification" else 1
        self.forest = Forest(classes)
        self.register_buffer("use_mask", torch.tensor([m in self.used for m in spec.modality_names]), persistent=False)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        """(n, *shape) -> (n, width): standardised features, zero-padded."""
        if modality not in self.counts:  # an unused modality: a placeholder that fuse never reads
            return self.mean.new_zeros((len(x), self.width))
        j, count = self.modalities.index(modality), self.counts[modality]
        z = (summarize(self.spec.modalities[j].kind, x) - self.mean[j, :count]) / self.std[j, :count]
        return F.pad(z, (0, self.width - count))

    def encode(self, batch: Batch) -> Tokens:
        present = batch.present & self.use_mask
        return Tokens(encode_present(batch, present, self.encode_modality, self.width), present, self.modalities)

    def design(self, tokens: Tokens) -> Tensor:
        """(B, F) the forest's input: the used modalities' features side by side, NaN where absent."""
        present = tokens.present & self.use_mask
        parts = [
            tokens.z[:, j, : self.counts[m]].masked_fill(~present[:, j, None], float("nan"))
            for j, m in enumerate(self.modalities)
            if m in self.counts
        ]
        return torch.cat(parts, dim=1)

    def fuse(self, tokens: Tokens) -> Tensor:
        out = self.forest(self.design(tokens))
        if self.spec.task == "regression":
            return out.squeeze(-1)
        return ((out + EPSILON) / (1 + EPSILON * out.shape[1])).log()

    def set_scale(self, features: dict[str, Tensor]) -> None:
        """Standardise with the mean and std of each modality's (n_present, count) train features
        (a modality present in no training sample keeps 0 and 1; so does a constant feature's std)."""
        for j, m in enumerate(self.modalities):
            f = features.get(m)
            if f is not None and len(f):
                std = f.std(dim=0, correction=0)
                self.mean[j, : f.shape[1]] = f.mean(dim=0)
                self.std[j, : f.shape[1]] = torch.where(std > 1e-12, std, 1.0)


@register_method("features")
class SummaryFeatures(Method):
    """Summary statistics of each modality, then a random forest: the reference floor (module doc).

    `trees`: forest size; `copies`: extra copies of the train set under `RandomDrop` (0: train on
    the data as given); `modalities` restricts the model to those (a uni-modal floor), as `joint`.
    """

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)
    floor: SummaryModel | None = None

    def __init__(
        self,
        trees: int = 300,
        copies: int = 3,
        modalities: str | Sequence[str] | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        self.trees = trees
        self.copies = copies
        self.modalities = modality_list(modalities)
        self.label_smoothing = label_smoothing

    def build(self, spec: DataSpec) -> None:
        self.check_task(spec)
        if self.trees < 1 or self.copies < 0:
            raise MMRobustError(f"features needs trees >= 1 and copies >= 0, got {self.trees} and {self.copies}")
        self.floor = SummaryModel(spec, self.modalities)

    @property
    def fitted(self) -> SummaryModel:
        if self.floor is None:
            raise MMRobustError(f"method '{self.name}' is not trained yet: call fit first")
        return self.floor

    @property
    def spec(self) -> DataSpec:
        return self.fitted.spec

    def modules(self) -> nn.Module:
        return self.fitted

    def encode(self, batch: Batch) -> Tokens:
        return self.fitted.encode(batch)

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.fitted.encode_modality(modality, x)

    def fuse(self, tokens: Tokens) -> Tensor:
        return self.fitted.fuse(tokens)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """The task loss of the fitted forest on `batch` (what `fit` reports; nothing is trained on it)."""
        return task_loss(self.fuse(self.encode(batch)), batch.target, self.spec.task, self.label_smoothing)

    def stages(self, seed: int) -> Sequence[Stage]:
        return (Stage("train", self.loss, fit_direct=self.fit_forest),)

    def fit_forest(self, train: MultimodalData, generator: torch.Generator) -> None:
        """Standardise on `train`, then grow the forest on its features plus `copies` masked copies."""
        x, y = self.training_design(train, generator)
        model = self.fitted
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor  # ~1 s to import: only when fitting

        if model.spec.task == "classification":
            forest = RandomForestClassifier(self.trees, max_features="sqrt", random_state=seed, n_jobs=1)
            forest.fit(x, y)
            model.forest.load_sklearn(forest.estimators_, [int(c) for c in forest.classes_])
        else:
            forest = RandomForestRegressor(
                self.trees, max_features=1 / 3, min_samples_leaf=5, random_state=seed, n_jobs=1
            )
            forest.fit(x, y)
            model.forest.load_sklearn(forest.estimators_)

    def training_design(self, train: MultimodalData, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Standardise on `train`; then the trees' inputs (its features plus `copies` masked copies,
        NaN where a modality is absent) and targets."""
        model = self.fitted
        present = train.present & model.use_mask.cpu()
        raw: dict[str, list[Tensor]] = {m: [] for m in model.counts}
        for start in range(0, len(train), CHUNK):
            rows = slice(start, start + CHUNK)
            for m in model.counts:
                j = train.modalities.index(m)
                raw[m].append(summarize(train.spec.modalities[j].kind, train.inputs[m][rows][present[rows, j]]))
        model.set_scale({m: torch.cat(parts) for m, parts in raw.items()})
        device = model.mean.device
        z = torch.cat([model.encode(b.to(device)).z for b in train.batches(CHUNK)])
        copies = self.copies if len(model.used) > 1 else 0  # one modality: nothing to drop
        masks = [present] + [RandomDrop().new_present(present, train.modalities, generator) for _ in range(copies)]
        x = torch.cat([model.design(Tokens(z, mask.to(device), train.modalities)) for mask in masks])
        return x.cpu().numpy(), train.target.repeat(len(masks)).numpy()
