"""Auditing a model trained outside mmrobust: `wrap(model, data, missing=...)`.

Any `nn.Module`, or any callable, that maps a sample's inputs to outputs can be audited once it is
told what a *missing* modality looks like to it. That is the one decision a user must make, so it is
explicit, and recorded in the results:

- `"zeros"`: absent inputs are zeros (the model cannot take a mask);
- `"mean"`: absent inputs are the train split's mean input of that modality (over samples that
  have it), a common "uninformative" fill;
- `"mask"`: inputs pass unchanged and the model also receives `present=` (B, M) bool, by keyword;
  the model must use it (the audit checks that masking changes its outputs);
- a callable `fill(inputs, present) -> inputs`: any other policy (it receives copies).

The model is called as `model(inputs)` with a dict of modality name -> (B, ...) tensor, or, given
`inputs=[names]`, as `model(x_a, x_b, ...)` in that order. It must return (B, classes) logits for
classification, (B,) or (B, 1) for regression, all finite (the audit refuses NaN or inf). Calls run
batched on the model's device, in eval mode, under `torch.inference_mode`. A wrapped model has no
token stage: the audit runs every scenario through the whole model (streamed chunk by chunk), and
scenarios that corrupt tokens are refused.

    wrapped = mmrobust.wrap(my_model, data, missing="zeros")
    result = mmrobust.audit(wrapped, data)
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.dataset import DataSpec, MultimodalData
from ..data.tokens import Tokens
from ..errors import MMRobustError, unknown_name, wrong_argument
from ..models.model import modality_list
from .base import Method, MethodTags

Fill = Callable[[dict[str, Tensor], Tensor], Mapping[str, Tensor]]
POLICIES = ("zeros", "mean", "mask")
CHECK_ROWS = 64  # samples the mask-blind check looks at


class _Holder(nn.Module):
    """The wrapped model (when it is a module) and an empty anchor that says where a plain
    callable runs: what `Method.modules()` must give (eval mode, a device)."""

    def __init__(self, model: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model if isinstance(model, nn.Module) else None
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def device(self) -> torch.device:
        return next(self.parameters()).device  # the model's first parameter, else the anchor


class WrappedModel(Method):
    """A model trained elsewhere, ready for `audit` (it cannot be trained here)."""

    name = "external"
    tags = MethodTags(has_tokens=False)

    def __init__(
        self,
        model: Callable[..., Any],
        spec: DataSpec,
        missing: str | Fill,
        inputs: Sequence[str] | None,
        fill_values: Mapping[str, Tensor],
    ) -> None:
        self.callable, self._spec, self.missing, self.inputs = model, spec, missing, inputs
        self.fill_values = dict(fill_values)
        self.holder = _Holder(model)
        self.seed = 0  # one trained model: a single "seed" in tables

    @property
    def spec(self) -> DataSpec:
        return self._spec

    @property
    def policy(self) -> str:
        """The missing-value policy's name, as results and reports record it."""
        return self.missing if isinstance(self.missing, str) else getattr(self.missing, "__name__", "callable")

    def get_params(self) -> dict[str, Any]:
        return {"model": type(self.callable).__name__, "missing": self.policy, "inputs": self.inputs}

    def describe(self) -> str:
        return f"external {type(self.callable).__name__} (missing={self.policy})"

    def modules(self) -> nn.Module:
        return self.holder

    def build(self, spec: DataSpec) -> None:
        raise MMRobustError("a wrapped model is audited, not trained: train it where it comes from")

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        raise MMRobustError("a wrapped model is audited, not trained: train it where it comes from")

    def encode(self, batch: Batch) -> Tokens:
        raise MMRobustError("a wrapped model has no token stage: audit it with input-stage scenarios")

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        raise MMRobustError("a wrapped model has no token stage: audit it with input-stage scenarios")

    def fuse(self, tokens: Tokens) -> Tensor:
        raise MMRobustError("a wrapped model has no token stage: audit it with input-stage scenarios")

    def _filled_by_callable(self, inputs: dict[str, Tensor], present: Tensor) -> dict[str, Tensor]:
        """The user's `missing(inputs, present)` policy applied, checked: it must give back a tensor
        of the same shape for every modality (else one line, not a traceback from the model)."""
        assert callable(self.missing)
        try:
            filled = self.missing({m: x.clone() for m, x in inputs.items()}, present.clone())
        except Exception as e:  # the user's code
            raise MMRobustError(
                f"the missing= callable failed: {type(e).__name__}: {e}; it is called as missing(inputs, present) "
                "with inputs a dict modality -> (B, ...) tensor and present a (B, M) bool mask"
            ) from e
        if not isinstance(filled, Mapping):
            wrong = f"a {type(filled).__name__}"
        else:
            bad = [m for m, x in inputs.items() if not isinstance(filled.get(m), Tensor) or filled[m].shape != x.shape]
            wrong = f"no tensor of the input's shape for {bad[0]!r}" if bad else ""
        if wrong:
            raise MMRobustError(f"the missing= callable must return a dict modality -> tensor of the input's shape; "
                                f"it returned {wrong}")  # fmt: skip
        return dict(filled)

    @torch.inference_mode()
    def predict(self, batch: Batch) -> Tensor:
        self.holder.eval()
        batch = batch.to(self.holder.device())
        inputs = {m: batch.inputs[m] for m in batch.modalities}
        extra: dict[str, Tensor] = {}
        if self.missing == "mask":
            extra["present"] = batch.present
        elif callable(self.missing):
            inputs = self._filled_by_callable(inputs, batch.present)
        else:  # zeros / mean: every absent row replaced, so the model never sees the clean value
            for j, m in enumerate(batch.modalities):
                absent = ~batch.present[:, j]
                if absent.any():
                    x = inputs[m].clone()
                    x[absent] = self.fill_values[m].to(x.device, x.dtype)
                    inputs[m] = x
        args = [inputs[m] for m in self.inputs] if self.inputs is not None else [inputs]
        try:
            out = self.callable(*args, **extra)
        except Exception as e:  # the user's code: one line naming what it was given, not its traceback
            shapes = ", ".join(f"{m} {tuple(x.shape)}" for m, x in inputs.items())
            call = "positionally" if self.inputs is not None else "as one dict"
            raise MMRobustError(
                f"the wrapped model failed on inputs {shapes} (passed {call}): {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}{self._positional_hint()}"
            ) from e
        return self._checked(out, len(batch))

    def _positional_hint(self) -> str:
        """Why a dict call failed, when the model names its inputs after the modalities: it wants them
        one by one, which the user must say (the order is theirs to give, not ours to guess)."""
        named = [m for m in _parameter_names(self.callable) if m in self._spec.modality_names]
        if self.inputs is not None or not named:
            return ""
        return (f"; it takes {', '.join(named)} as separate arguments: pass inputs={named} "
                f"(command line: --inputs {','.join(named)})")

    def _checked(self, out: Any, rows: int) -> Tensor:
        spec = self._spec
        if not isinstance(out, Tensor):
            raise MMRobustError(f"the wrapped model returned {type(out).__name__}, not a tensor")
        if spec.task == "regression" and out.shape in ((rows,), (rows, 1)):
            return out.reshape(rows).float()
        if spec.task == "classification" and tuple(out.shape) == (rows, spec.num_classes):
            return out.float()
        want = f"({rows}, {spec.num_classes}) logits" if spec.task == "classification" else f"({rows},) values"
        raise MMRobustError(f"the wrapped model returned shape {tuple(out.shape)}; {spec.task} needs {want}")

    def check_masks_matter(self, batch: Batch) -> None:
        """Refuse a model that scores the same whatever is missing: masking each modality in turn on
        `batch` (a few test samples) must change some output, or every subset would score alike."""
        clean = self.predict(batch)
        for j in range(len(batch.modalities)):
            present = batch.present.clone()
            present[:, j] = False
            if not torch.equal(self.predict(batch.with_present(present)), clean):
                return
        raise MMRobustError(
            f"masking a modality does not change this model's outputs (missing={self.policy}): it ignores "
            "which inputs are present; choose missing='zeros' or 'mean' (--missing), or pass "
            "mask_check=False (--no-mask-check) if that is really so"
        )


def wrap(
    model: Callable[..., Any],
    data: MultimodalData,
    *,
    missing: str | Fill = "zeros",
    inputs: Sequence[str] | None = None,
    task: str | None = None,
) -> WrappedModel:
    """`model` (an `nn.Module` or any callable) as something `audit` accepts, for data like `data`
    (its spec; the `mean` policy reads its train split). See the module docstring for the policies
    and the calling conventions."""
    if not isinstance(data, MultimodalData):
        hint = "call wrap(model, data, ...) with the data it will be audited on, e.g. mmrobust.load_dataset(name)"
        raise wrong_argument("wrap", "a MultimodalData as its second argument", data, hint)
    spec = data.spec
    inputs = modality_list(inputs)
    if task is not None and task not in ("classification", "regression"):
        raise unknown_name("task", str(task), ("classification", "regression"))
    if task is not None and task != spec.task:
        raise MMRobustError(f"task={task!r} but the data is a {spec.task} task")
    if not callable(model):
        raise MMRobustError(f"the model to wrap must be callable, got {type(model).__name__}")
    if not callable(missing) and not isinstance(missing, str):
        raise MMRobustError(f"missing must be one of {', '.join(POLICIES)} or a callable, got {missing!r}")
    if isinstance(missing, str) and missing not in POLICIES:
        raise unknown_name("missing-value policy", missing, POLICIES)
    for name in inputs or ():
        if name not in spec.modality_names:
            raise unknown_name("modality", name, spec.modality_names)
    if missing == "mask" and not _takes_present(model):
        raise MMRobustError(
            f"missing='mask' calls the model with present=(B, M) mask, but {type(model).__name__} does not "
            "take a `present` argument; add one, or choose missing='zeros' or 'mean'"
        )
    fills = {}
    if missing == "zeros":
        fills = {m.name: torch.zeros(m.shape) for m in spec.modalities}
    elif missing == "mean":
        fills = train_means(data)
    return WrappedModel(model, spec, missing, None if inputs is None else list(inputs), fills)


def _signature(model: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(model.forward if isinstance(model, nn.Module) else model)
    except (TypeError, ValueError):  # no signature to read (a builtin)
        return None


def _parameter_names(model: Callable[..., Any]) -> list[str]:
    signature = _signature(model)
    return [] if signature is None else list(signature.parameters)


def _takes_present(model: Callable[..., Any]) -> bool:
    signature = _signature(model)
    if signature is None:  # let the call decide
        return True
    parameters = signature.parameters
    return "present" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def train_means(data: MultimodalData) -> dict[str, Tensor]:
    """Per modality, the mean input over the train split's samples that have it (streamed)."""
    if "train" not in data.splits or len(data.split("train")) == 0:
        raise MMRobustError("missing='mean' needs the data's train split (the fill is its mean input)")
    train = data.split("train")
    sums = {m.name: torch.zeros(m.shape, dtype=torch.float64) for m in train.spec.modalities}
    counts = dict.fromkeys(sums, 0)
    for batch in train.batches(1024):
        for j, m in enumerate(batch.modalities):
            rows = batch.present[:, j]
            sums[m] += batch.inputs[m][rows].double().sum(dim=0)
            counts[m] += int(rows.sum())
    missing = [m for m, n in counts.items() if n == 0]
    if missing:
        raise MMRobustError(f"missing='mean': no training sample has {missing}")
    return {m: (sums[m] / counts[m]).float() for m in sums}


EXTERNAL = "external"  # the `method` of a config entry that audits a model trained elsewhere
EXTERNAL_PARAMS = {"model": "MODULE:FUNCTION or FILE.py:FUNCTION", "weights": "a state dict", "missing": "zeros",
                   "inputs": "modality names, in the model's argument order"}


def check_external_params(params: Mapping[str, Any], where: str) -> None:
    """A config's `{method: external, params: {model, weights, missing, inputs}}`, checked when it is read."""
    unknown = sorted(set(params) - set(EXTERNAL_PARAMS))
    if unknown:
        raise MMRobustError(f"{where}: an external model takes only {', '.join(EXTERNAL_PARAMS)}; not {unknown}")
    if not isinstance(params.get("model"), str):
        raise MMRobustError(f"{where}: an external model needs params.model: MODULE:FUNCTION (or FILE.py:FUNCTION)")
    missing = params.get("missing", "zeros")
    if missing not in POLICIES:
        raise unknown_name("missing-value policy", missing, POLICIES)
    inputs = params.get("inputs")
    if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(m, str) for m in inputs)):
        raise MMRobustError(f"{where}: params.inputs must be a list of modality names, got {inputs!r}")


def wrap_external(params: Mapping[str, Any], data: MultimodalData) -> WrappedModel:
    """The model a config's external entry names, loaded and wrapped for `data`."""
    model = load_external(params["model"], params.get("weights"))
    return wrap(model, data, missing=params.get("missing", "zeros"), inputs=params.get("inputs"))


def load_external(target: str, weights: str | Path | None = None) -> Callable[..., Any]:
    """The model `target` names, "package.module:function" or "path/to/file.py:function" (a
    function taking no arguments that returns the model), with `weights` (a state dict saved by
    `torch.save(model.state_dict(), path)`) loaded safely: tensors only, no arbitrary unpickling."""
    where, sep, attribute = target.rpartition(":")
    if not sep or not where or not attribute:
        raise MMRobustError(f"--model must be MODULE:FUNCTION or FILE.py:FUNCTION, got {target!r}")
    try:
        if where.endswith(".py"):
            path = Path(where)
            if not path.is_file():
                raise MMRobustError(f"--model: no file {path}")
            loader = importlib.util.spec_from_file_location(f"_mmrobust_external_{path.stem}", path)
            assert loader is not None and loader.loader is not None
            module = importlib.util.module_from_spec(loader)
            folder = str(path.resolve().parent)
            if folder not in sys.path:  # its own imports of modules beside it, as `python FILE.py` finds them
                sys.path.insert(0, folder)
            loader.loader.exec_module(module)
        else:
            if "" not in sys.path and str(Path.cwd()) not in sys.path:  # as `python -m` would find it
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(where)
    except ImportError as e:
        raise MMRobustError(f"--model: cannot import {where!r} ({e})") from e
    build = getattr(module, attribute, None)
    if not callable(build):
        raise MMRobustError(f"--model: {where} has no function {attribute!r}")
    try:
        model = build()
    except Exception as e:  # the user's code: e.g. a factory that needs arguments
        raise MMRobustError(
            f"--model: {target}() failed: {type(e).__name__}: {e}; the function is called without arguments "
            "and must return the model (wrap one that needs arguments in a function that takes none)"
        ) from e
    if weights is not None:
        if not isinstance(model, nn.Module):
            raise MMRobustError(f"--weights needs an nn.Module, but {target} returned {type(model).__name__}")
        try:
            model.load_state_dict(load_state_dict(Path(weights)))
        except RuntimeError as e:  # missing / unexpected keys, shape mismatches
            first = str(e).strip().splitlines()[-1].strip()
            raise MMRobustError(f"--weights: {weights} does not fit the model built by {target}: {first}") from e
    return model


def load_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from `torch.save`, read with `weights_only=True` (tensors and plain containers)."""
    if not path.is_file():
        raise MMRobustError(f"--weights: no file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable or unsafe files
        raise MMRobustError(f"--weights: {path} is not a readable tensors-only state dict: {_load_failure(e)}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # the common {"state_dict": ...} wrapper
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise MMRobustError(f"--weights: {path} does not hold a state dict (name -> tensor)")
    return state


def _load_failure(error: Exception) -> str:
    """What went wrong in `torch.load(weights_only=True)`, in one line. Torch's own message goes on to
    suggest `weights_only=False`, which runs arbitrary code: not advice to pass on."""
    text = str(error)
    if isinstance(error, EOFError) or "EOF" in text:
        return "the file is empty or cut short"
    if "Unsupported global" in text:
        return ("it pickles Python objects (a whole model saved by torch.save(model)?); "
                "save model.state_dict() instead")
    if "WeightsUnpickler error:" in text:  # torch's reason, after its advice
        reason = text.split("WeightsUnpickler error:", 1)[1].strip()
    else:  # e.g. a KeyError from the unpickler reading a text file
        reason = f"{type(error).__name__}: {text.strip()}"
    return f"{reason.splitlines()[0].strip() if reason else type(error).__name__} (is it a file written by torch.save?)"
