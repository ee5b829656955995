"""What every method is: a registered, tagged object that owns a model and its training loss.

scikit-learn's contract, adapted: the constructor only stores parameters (readable back via
`get_params`), fitted state (`model`) is built by `build(spec)` when training starts, and
capability `tags` tell the sweep planner and the conformance check what a method can do.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from ..corruption import Corruption
from ..data.batch import Batch
from ..data.dataset import DataSpec, MultimodalData, Scaling, rescaled
from ..data.tokens import Tokens
from ..errors import MMRobustError, check_number, wrong_argument
from ..models.fusion import FUSIONS, RowFuser
from ..models.model import MultimodalModel
from ..registry import Registry, check_options

METHODS: Registry[type[Method]] = Registry("method")
ModelT = TypeVar("ModelT", bound=MultimodalModel)


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def decorator(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return decorator


def create_method(name: str, **params: Any) -> Method:
    """Build a registered method from its name and parameters (`create_method("dropout", fusion="sum")`)."""
    cls = METHODS.get(name)
    check_options(f"method '{name}'", cls.__init__, params)
    if "fusion" in params and not isinstance(params["fusion"], str):  # else an AttributeError deep in `fit`
        raise MMRobustError(f"fusion must be a fusion's name ({', '.join(FUSIONS.names())}), got {params['fusion']!r}")
    if "label_smoothing" in params:  # torch checks it only in the first loss, and lets negatives pass as 0
        smoothing = params["label_smoothing"]
        if check_number(smoothing, "label_smoothing", 0.0) >= 1:
            raise MMRobustError(f"label_smoothing must be in [0, 1), got {smoothing!r}")
    return cls(**params)


def check_method_argument(obj: object, caller: str) -> None:
    """`fit` and `audit` take a method object; a method's name or a plain module gets the call to make."""
    if isinstance(obj, Method):
        return
    if isinstance(obj, str):
        hint = f"build it with mmrobust.create_method({obj!r})"
    elif isinstance(obj, nn.Module):
        hint = "a model trained elsewhere is audited through mmrobust.wrap(model, data, missing=...)"
    else:
        hint = "build one with mmrobust.create_method(name, ...)"
    raise wrong_argument(caller, "a method", obj, hint)


def inputs_as_trained(method: Method, data: MultimodalData) -> MultimodalData:
    """`data` scaled as `method`'s training data were (`rescaled`; docs/architecture.md, invariant 6),
    when it recorded how: data standardised on another file's or split's statistics, or not at all,
    would otherwise reach the model on another scale without a word. A model that recorded nothing (a
    wrapped model, a checkpoint saved before checkpoints recorded it) sees `data` as given."""
    if method.input_scaling is None:
        return data
    problem = method.spec.compatibility_problem(data.spec)  # said as such, not as statistics that do not fit
    if problem:
        raise MMRobustError(f"the model was trained for other data ({problem})")
    return rescaled(data, method.input_scaling)


EVERY_TASK = frozenset({"classification", "regression"})


@dataclass(frozen=True)
class MethodTags:
    """Capabilities: `fit` refuses a task left out, the sweep planner skips combinations a method
    cannot run, and `check_method` verifies every claim. The defaults claim the most."""

    tasks: frozenset[str] = EVERY_TASK
    needs_complete_training_data: bool = False
    per_sample_masks: bool = True
    has_tokens: bool = True  # encode/fuse exist: the audit's encode-once fast path applies


@dataclass(frozen=True)
class Stage:
    """One phase of a method's training, run by `fit` in order (e.g. CroSSL: pretrain, then
    fine-tune; UME: one uni-modal member after another).

    `module` is what the stage trains (default: all of `Method.modules()`; everything else is
    left untouched), `predict` what validation scores for early stopping and selection
    (default: `Method.predict`); `select=False` trains for `epochs` without selection (e.g.
    self-supervised pretraining, whose val labels must not be used). `reuse_key`, when given,
    lets `fit` reuse the stage's trained weights from an earlier run with the same key, data,
    seed and options (UME and MMA share their uni-modal members this way). A stage with `choices`
    trains nothing: it is a choice on validation (UME-MMA's), where `fit` calls `choose(i)` for each
    candidate i, scores it, and keeps the best one's weights; a fixed budget cannot run it.
    `fit_direct`, when given, fits the stage's model in one call on the whole train split instead of
    epochs of `loss` (a model without gradient, e.g. `features`' trees); `fit` still records the
    stage's training loss and validation metrics as one history row (epoch 0). `rows`, when given,
    picks the training samples the stage may learn from (a bool (B,) mask, CroSSL's label fraction);
    `fit` applies it to the raw batch *before* augmentation, so an augmented copy of a sample can never
    change which samples are chosen.
    """

    name: str
    loss: Callable[[Batch, torch.Generator], Tensor]
    module: nn.Module | None = None
    predict: Callable[[Batch], Tensor] | None = None
    select: bool = True
    epochs: int | None = None
    reuse_key: Mapping[str, Any] | None = None
    choices: Sequence[str] = ()
    choose: Callable[[int], None] | None = None
    fit_direct: Callable[[MultimodalData, torch.Generator], None] | None = None
    rows: Callable[[Batch], Tensor] | None = None

    @property
    def chooses(self) -> bool:
        return bool(self.choices)


class Method(ABC):
    """Base class. Subclasses implement `build` and `loss`; prediction is encode -> fuse."""

    name: ClassVar[str] = "method"
    tags: ClassVar[MethodTags] = MethodTags()
    model: MultimodalModel | None = None
    seed: int | None = None  # the seed `fit` trained it with: a record for checkpoints and audits
    input_scaling: Scaling | None = None  # the training data's `scaling`, set by `fit` (None: not recorded)

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, with corruption objects as their dicts: what configs and
        checkpoints record, and what `create_method(name, **params)` takes back."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {p: _recorded(getattr(self, p)) for p in names}

    @abstractmethod
    def build(self, spec: DataSpec) -> None:
        """Create the fitted state (`self.model`) for data described by `spec`."""

    @abstractmethod
    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """The training objective on one batch (may draw augmentation from `generator`)."""

    def stages(self, seed: int) -> Sequence[Stage]:
        """The training stages `fit` runs in order for the run seeded by `seed` (for stages whose
        definition draws from it, e.g. CroSSL's labelled subset); most methods have one: their `loss`."""
        return (Stage("train", self.loss),)

    # --- shared machinery -------------------------------------------------------------
    @property
    def fitted_model(self) -> MultimodalModel:
        if self.model is None:
            raise MMRobustError(f"method '{self.name}' is not trained yet: call fit first")
        return self.model

    def fitted_as(self, kind: type[ModelT]) -> ModelT:
        """The fitted model, typed as the `kind` this method builds."""
        model = self.fitted_model
        if not isinstance(model, kind):
            raise MMRobustError(f"method '{self.name}' holds a {type(model).__name__}, not a {kind.__name__}")
        return model

    @property
    def spec(self) -> DataSpec:
        return self.fitted_model.spec

    def check_task(self, spec: DataSpec) -> None:
        if spec.task not in self.tags.tasks:
            raise MMRobustError(f"method '{self.name}' does not support {spec.task}")

    def modules(self) -> nn.Module:
        """Everything with trainable parameters (what optimisers and checkpoints see)."""
        return self.fitted_model

    def encode(self, batch: Batch) -> Tokens:
        return self.fitted_model.encode(batch)

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        return self.fitted_model.encode_modality(modality, x)

    def fuse(self, tokens: Tokens) -> Tensor:
        return self.fitted_model.fuse(tokens)

    def prepare_fusion(self, z: Tensor) -> RowFuser | None:
        """`fuse` of many (token row, mask) pairs with each row's mask-independent work done once
        (`MultimodalModel.prepare_fusion`); None for a method that fuses its own way."""
        if type(self).fuse is not Method.fuse:
            return None
        return self.fitted_model.prepare_fusion(z)

    @torch.no_grad()
    def predict(self, batch: Batch) -> Tensor:
        self.modules().eval()
        return self.fuse(self.encode(batch))

    def describe(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{self.name}({params})"


def _recorded(value: Any) -> Any:
    return value.to_dict() if isinstance(value, Corruption) else value
