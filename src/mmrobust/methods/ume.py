"""UME, MMA and UME-MMA (Li, Du, Zhao, Huang, Zhao, arXiv 2310.06383, withdrawn from ICLR 2024; no
official code): a late-fusion model whose encoders come from uni-modal training.

Only the abstract and the public ICLR 2024 reviews were readable; what follows is a reconstruction
from them, the choices they leave open made explicit below. Per modality m: encoder E_m and linear head h_m.
`readout` (an option beyond the paper) replaces h_m by a fusion over m's one token, per modality: a
member is then exactly a single-modality `joint` model with that fusion (a specialist whose read-out
validation chose), for modalities where a linear head is the weaker read-out.

1. members (stage 1, UME)   one stage per modality: (E_m, h_m) trained *alone* on the samples where m
                            is present, ℓ(h_m(E_m(x_m)), y) (CE, or L1 for regression), selected on
                            validation with its own prediction. Each member stage has a `reuse_key`
                            (modality, kind, shape, dim, task), so `ume`, `mma` and `ume_mma` runs with
                            the same data, seed and fit options train each member once and reuse it.
2. ensemble (`ume`)         ŷ = (1/|P|) Σ_{m∈P} h_m(E_m(x_m)) over the present modalities P
                            (`combine="logits"`), or log((1/|P|) Σ_{m∈P} softmax h_m(...)) (`"probs"`);
                            regression averages the outputs. A missing member contributes nothing;
                            P = ∅ gives the prior 0 (uniform logits; 0 for regression, the targets'
                            scale is the loader's). Weights are uniform: fitting per-modality weights
                            needs validation batches inside a trained stage, which `Stage` does not
                            give (validation only selects), and fitting them on train would reward
                            the members that overfit it.
3. adaptation (`mma`)       a second model E'_m + `fusion` (any registered fusion; `late` is the
                            paper's) initialised from the members at the first step of the stage:
                            E'_m ← E_m, and for `late`/`sum` the fusion's per-modality heads ← h_m
                            where h_m is linear (so with linear members `late` starts as the logit
                            ensemble exactly); `concat`/`transformer` heads start fresh. Then it is
                            fine-tuned jointly under missing-modality augmentation: by default
                            `MissingRates({m: drop_probability for every m},
                            if_all_missing="keep_one")`, i.e. each modality independently absent with
                            probability p, never all of them (the abstract's "replace one modality by
                            its missing representation" for two modalities, up to the p² case);
                            `corruption` overrides it with any corruption (object or dict).
                            Missing modalities are masks, never zero inputs
                            (docs/architecture.md, invariant 1).
4. choice (`ume_mma`)       members → adaptation → a "choose" stage (`Stage.choices`) that trains
                            nothing: `fit` scores candidate 0 (the ensemble), then 1 (the adapted
                            model), one history row each, on the val split under `target` (a
                            corruption, its dict or its name such as "rates[a=0.5,b=0.5]"; None =
                            clean), with masks drawn from a generator seeded by the fit seed,
                            identical for both. `fit` keeps the better one by its `select` metric
                            and restores its weights: the choice is the
                            buffer `choice` (0 ensemble, 1 adapted), so checkpoints carry it;
                            `describe()` and `chosen` report it, and the run's `best_epoch` is it.
                            The paper's rule is unknown; this is a validation-guided choice.

`ume` also ends with a no-training "ensemble" stage, so that `fit` reports the ensemble's validation
metrics rather than the last member's. Members and adapted model live side by side in `mma` and
`ume_mma` checkpoints (the members are frozen after stage 1).

    mmrobust train --data avmnist --method ume --out runs/ume
    create_method("mma", fusion="late", drop_probability=0.3)
    create_method("ume_mma", target="rates[image=0.5,audio=0.5]")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from ..corruption import Corruption, MissingRates, as_corruption, encode_corrupted
from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..errors import MMRobustError, unknown_name
from ..models.fusion import FUSIONS, _PerModalityHeads, create_fusion
from ..models.model import MultimodalModel
from .base import EVERY_TASK, Method, MethodTags, Stage, register_method
from .losses import task_loss

Combine = Literal["logits", "probs"]
Readout = str | Mapping[str, str]  # "linear" or a registered fusion; one for all modalities, or per modality
MEMBER_FORMAT = "ume-member/1"  # bump when a member's architecture or training changes
CANDIDATES = ("ume", "mma")  # what ume_mma chooses between: `choice` 0 and 1


def member_head(readout: str, dim: int, out: int) -> nn.Module:
    """h_m: a linear head (UME's), or `readout`, a fusion, over m's one token."""
    return nn.Linear(dim, out) if readout == "linear" else create_fusion(readout, 1, dim, out)


class EnsembleFusion(nn.Module):
    """The members' heads h_m (separate parameters, so a member stage trains only its own), averaged
    over the present modalities; linear heads are applied to all modalities in one einsum."""

    def __init__(
        self, modalities: Sequence[str], dim: int, out: int, combine: Combine, task: str, readouts: Mapping[str, str]
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({m: member_head(readouts[m], dim, out) for m in modalities})
        self.combine, self.task, self.out = combine, task, out
        self.all_linear = all(isinstance(h, nn.Linear) for h in self.heads.values())

    def per_modality(self, z: Tensor, present: Tensor) -> Tensor:
        """(B, M, D) tokens -> (B, M, O) each member's output where m is present (elsewhere
        unspecified: `forward` masks it out)."""
        if self.all_linear:
            heads = cast(list[nn.Linear], list(self.heads.values()))
            weight = torch.stack([h.weight for h in heads])  # (M, O, D)
            bias = torch.stack([h.bias for h in heads])  # (M, O)
            return torch.einsum("bmd,mod->bmo", z, weight) + bias
        outputs = []
        for j, (m, head) in enumerate(self.heads.items()):  # a fusion per modality: one call each
            rows = present[:, j].nonzero().flatten()
            output = z.new_zeros(len(z), self.out)
            if len(rows):
                token = z[rows, j : j + 1]  # (n, 1, D)
                linear = isinstance(head, nn.Linear)
                own = head(token[:, 0]) if linear else head(Tokens(token, present[rows, j : j + 1], (m,)))
                output = output.index_copy(0, rows, own)
            outputs.append(output)
        return torch.stack(outputs, dim=1)

    def forward(self, tokens: Tokens) -> Tensor:
        present = tokens.present  # (B, M)
        z = tokens.z.masked_fill(~present[..., None], 0.0)  # (B, M, D): absent slots never read
        per_modality = self.per_modality(z, present)  # (B, M, O)
        count = present.sum(dim=1, keepdim=True)  # (B, 1)
        if self.combine == "probs" and self.task == "classification":
            probs = (per_modality.softmax(dim=-1) * present[..., None]).sum(dim=1) / count.clamp_min(1)  # (B, O)
            return torch.where(count > 0, probs.clamp_min(torch.finfo(probs.dtype).tiny).log(), 0.0)
        return (per_modality * present[..., None]).sum(dim=1) / count.clamp_min(1)  # (B, O); 0 if none


class UniModalEnsemble(MultimodalModel):
    """Encoders E_m + `EnsembleFusion` heads h_m: member m is (encoders[m], fusion.heads[m])."""

    fusion: EnsembleFusion

    def __init__(self, spec: DataSpec, dim: int, combine: Combine, readouts: Mapping[str, str]) -> None:
        super().__init__(spec, fusion="late", dim=dim)
        # the late fusion's heads share one (M, D, O) parameter: replaced by separate heads
        self.fusion = EnsembleFusion(spec.modality_names, dim, spec.num_classes, combine, spec.task, readouts)

    def member(self, modality: str) -> nn.Module:
        """Member m's parameters, as one module with stable keys (encoder.*, head.*) for stage reuse."""
        return nn.ModuleDict({"encoder": self.encoders[modality], "head": self.fusion.heads[modality]})

    def member_output(self, modality: str, batch: Batch) -> Tensor:
        """Member m's prediction; the prior (0) for samples without m."""
        only = torch.tensor([m == modality for m in self.modalities], device=batch.present.device)
        return self(batch.with_present(batch.present & only))


class AdaptedModel(MultimodalModel):
    """MMA: its own encoders + `fusion`, started from the members of `ensemble` (kept frozen beside it).
    `fuse`/`encode` use the adapted model unless `choice` says the ensemble (ume_mma)."""

    choice: Tensor  # () long: 0 = the ensemble predicts, 1 = the adapted model (-1: not chosen yet)
    initialised: Tensor  # () bool: the adapted model has been copied from the members

    def __init__(self, spec: DataSpec, fusion: str, dim: int, ensemble: UniModalEnsemble, choice: int) -> None:
        with torch.random.fork_rng(devices=[]):  # the members' initial weights and the RNG after
            super().__init__(spec, fusion=fusion, dim=dim)  # build match `ume`'s: members are shared
        self.ensemble = ensemble
        self.register_buffer("choice", torch.tensor(choice))
        self.register_buffer("initialised", torch.tensor(False))
        self._adapted_only = False  # set within `adapted_only`

    @property
    def uses_ensemble(self) -> bool:
        return int(self.choice) == 0 and not self._adapted_only

    def adapted(self) -> nn.Module:
        """What the adaptation stage trains (not the members)."""
        return nn.ModuleDict({"encoders": self.encoders, "fusion": self.fusion})

    @torch.no_grad()
    def initialise_from_members(self) -> None:
        for m, encoder in self.encoders.items():
            encoder.load_state_dict(self.ensemble.encoders[m].state_dict())
        if isinstance(self.fusion, _PerModalityHeads):  # late, sum: head m <- h_m, where h_m is linear
            for j, m in enumerate(self.modalities):
                head = self.ensemble.fusion.heads[m]
                if isinstance(head, nn.Linear):
                    self.fusion.weight[j].copy_(head.weight.T)  # (D, O)
                    self.fusion.bias[j].copy_(head.bias)
        self.initialised.fill_(True)

    @contextlib.contextmanager
    def adapted_only(self) -> Iterator[None]:
        """Within it, `encode`/`fuse` are the adapted model's, whatever `choice` says."""
        self._adapted_only = True
        try:
            yield
        finally:
            self._adapted_only = False

    def adapted_output(self, batch: Batch) -> Tensor:
        """The adapted model's prediction, whatever `choice` says."""
        with self.adapted_only():
            return self(batch)

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        if self.uses_ensemble:
            return self.ensemble.encode_modality(modality, x)
        return super().encode_modality(modality, x)

    def fuse(self, tokens: Tokens) -> Tensor:
        return self.ensemble.fuse(tokens) if self.uses_ensemble else super().fuse(tokens)


def _no_training(batch: Batch, generator: torch.Generator) -> Tensor:
    """The loss of a stage that only scores on validation: no parameter gets a gradient (AdamW
    skips parameters without one, weight decay included)."""
    return torch.zeros((), device=batch.present.device, requires_grad=True)


@register_method("ume")
class UniModalEnsembleMethod(Method):
    """UME: members trained alone (stage 1), averaged over the present modalities.

    `fusion` is accepted for a uniform interface (the conformance suite passes every fusion) and
    ignored: the ensemble is a late fusion by construction. It is the fusion of `mma`/`ume_mma`.
    """

    tags = MethodTags(tasks=EVERY_TASK, needs_complete_training_data=False, per_sample_masks=True)

    def __init__(
        self,
        fusion: str = "late",
        dim: int = 64,
        combine: Combine = "logits",
        label_smoothing: float = 0.0,
        readout: Readout = "linear",
    ) -> None:
        self.fusion = fusion
        self.dim = dim
        self.combine = combine
        self.label_smoothing = label_smoothing
        self.readout = readout

    def _check(self, spec: DataSpec) -> None:
        self.check_task(spec)
        if self.combine not in ("logits", "probs"):
            raise MMRobustError(f"combine must be 'logits' or 'probs', not '{self.combine}'")
        self.readouts(spec)

    def readouts(self, spec: DataSpec) -> dict[str, str]:
        """Each modality's member read-out ("linear" where `readout` names none)."""
        names = spec.modality_names
        if not isinstance(self.readout, str | Mapping):
            raise MMRobustError(f"readout must be a name or a mapping modality -> name, not {self.readout!r}")
        given = {m: self.readout for m in names} if isinstance(self.readout, str) else dict(self.readout)
        for m, name in given.items():
            if m not in names:
                raise unknown_name("modality in readout", str(m), names)
            if not isinstance(name, str) or (name != "linear" and name not in FUSIONS):
                raise unknown_name(f"readout for '{m}'", str(name), ["linear", *FUSIONS.names()])
        return {m: given.get(m, "linear") for m in names}

    def build(self, spec: DataSpec) -> None:
        self._check(spec)
        self.model = UniModalEnsemble(spec, self.dim, self.combine, self.readouts(spec))

    @property
    def ensemble(self) -> UniModalEnsemble:
        return self.fitted_as(UniModalEnsemble)

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        """The sum of the members' losses (what the member stages minimise one at a time)."""
        return torch.stack([self.member_loss(m)(batch, generator) for m in self.spec.modality_names]).sum()

    def member_loss(self, modality: str) -> Callable[[Batch, torch.Generator], Tensor]:
        def loss(batch: Batch, generator: torch.Generator) -> Tensor:
            rows = batch.present[:, self.spec.modality_names.index(modality)]
            if not bool(rows.any()):
                return _no_training(batch, generator)
            output = self.ensemble.member_output(modality, batch)
            return task_loss(output[rows], batch.target[rows], self.spec.task, self.label_smoothing)

        return loss

    def member_stages(self) -> list[Stage]:
        ensemble, spec = self.ensemble, self.spec
        readouts = self.readouts(spec)
        stages = []
        for m in spec.modalities:
            key: dict[str, Any] = {
                "format": MEMBER_FORMAT,
                "modality": m.name,
                "kind": m.kind,
                "shape": list(m.shape),
                "dim": self.dim,
                "task": spec.task,
                "outputs": spec.num_classes,
                "label_smoothing": self.label_smoothing,
            }
            if set(readouts.values()) != {"linear"}:  # all-linear members keep the key they had before the option
                key["readout"] = readouts  # every member's: building the others' heads moves this one's initial weights

            def predict(batch: Batch, name: str = m.name) -> Tensor:
                return ensemble.member_output(name, batch)

            stages.append(Stage(f"ume:{m.name}", self.member_loss(m.name), ensemble.member(m.name), predict,
                                reuse_key=key))  # fmt: skip
        return stages

    def stages(self, seed: int) -> Sequence[Stage]:
        return (*self.member_stages(), Stage("ensemble", _no_training, epochs=1))


@register_method("mma")
class MissingModalityAdaptation(UniModalEnsembleMethod):
    """MMA: a `fusion` model started from the UME members, fine-tuned under missing-modality augmentation."""

    def __init__(
        self,
        fusion: str = "late",
        dim: int = 64,
        drop_probability: float = 0.3,
        corruption: Corruption | Mapping[str, Any] | None = None,
        combine: Combine = "logits",
        label_smoothing: float = 0.0,
        readout: Readout = "linear",
    ) -> None:
        super().__init__(fusion, dim, combine, label_smoothing, readout)
        self.drop_probability = drop_probability
        self.corruption = corruption

    _initial_choice = 1

    def build(self, spec: DataSpec) -> None:
        self._check(spec)
        ensemble = UniModalEnsemble(spec, self.dim, self.combine, self.readouts(spec))
        self.model = AdaptedModel(spec, self.fusion, self.dim, ensemble, self._initial_choice)

    @property
    def adapted_model(self) -> AdaptedModel:
        return self.fitted_as(AdaptedModel)

    @property
    def ensemble(self) -> UniModalEnsemble:
        return self.adapted_model.ensemble

    @property
    def train_corruption(self) -> Corruption:
        if self.corruption is None:
            rates = {m: self.drop_probability for m in self.spec.modality_names}
            return MissingRates(rates, if_all_missing="keep_one")
        return as_corruption(self.corruption)

    def start_adaptation(self) -> None:
        self.adapted_model.initialise_from_members()

    def loss(self, batch: Batch, generator: torch.Generator) -> Tensor:
        model = self.adapted_model
        if not bool(model.initialised):  # first step of the stage (a resumed run has it in its weights)
            self.start_adaptation()
        with model.adapted_only():
            output = model.fuse(encode_corrupted(model.encode, batch, self.train_corruption, generator))
        return task_loss(output, batch.target, model.spec.task, self.label_smoothing)

    def stages(self, seed: int) -> Sequence[Stage]:
        model = self.adapted_model
        return (*self.member_stages(), Stage("mma", self.loss, model.adapted(), model.adapted_output))


@register_method("ume_mma")
class UMEMMA(MissingModalityAdaptation):
    """UME-MMA: train both, keep the one that scores better on validation under `target`."""

    _initial_choice = -1

    def __init__(
        self,
        fusion: str = "late",
        dim: int = 64,
        drop_probability: float = 0.3,
        corruption: Corruption | Mapping[str, Any] | None = None,
        combine: Combine = "logits",
        target: Corruption | Mapping[str, Any] | str | None = None,
        label_smoothing: float = 0.0,
        readout: Readout = "linear",
    ) -> None:
        super().__init__(fusion, dim, drop_probability, corruption, combine, label_smoothing, readout)
        self.target = target
        self._target_generator = torch.Generator()

    @property
    def chosen(self) -> str | None:
        """The choice of `ume_mma`: "ume" or "mma" once trained, None before."""
        if self.model is None or int(self.adapted_model.choice) < 0:
            return None
        return CANDIDATES[int(self.adapted_model.choice)]

    def describe(self) -> str:
        return super().describe() + (f" -> {self.chosen}" if self.chosen else "")

    # --- the choice: a stage that trains nothing; `fit` scores each candidate on val, keeps the best -----
    def _set_choice(self, candidate: int, seed: int) -> None:
        """Make `candidate` (0 ensemble, 1 adapted) predict, with the target's masks re-seeded so
        both candidates are scored on the same masks."""
        self.adapted_model.choice.fill_(candidate)
        self._target_generator.manual_seed(seed)

    def _score_candidate(self, batch: Batch) -> Tensor:
        """The current candidate's output under `target`."""
        if self.target is not None:
            batch = as_corruption(self.target)(batch, self._target_generator)
        return self.adapted_model(batch)

    def stages(self, seed: int) -> Sequence[Stage]:
        if self.target is not None:
            as_corruption(self.target)  # a bad target fails before any training
        choose = Stage("choose", _no_training, predict=self._score_candidate, choices=CANDIDATES,
                       choose=partial(self._set_choice, seed=seed))  # fmt: skip
        return (*super().stages(seed), choose)
