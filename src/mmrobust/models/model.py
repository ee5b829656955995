"""The multimodal model: per-modality encoders, then a fusion, split at the token tensor.

`encode` and `fuse` are separate so that the audit can encode a batch once and fuse it
under many masks (docs/architecture.md, invariant 3). Each encoder only runs on the samples
where its modality is present (gather -> encode -> scatter): absent placeholders are never
read, and training under modality dropout costs in proportion to what is present.

`use` restricts the model to some modalities (a uni-modal baseline, a UME member): the
others are never encoded and are treated as absent in every fusion, including the audit's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..data.batch import Batch
from ..data.dataset import DataSpec
from ..data.tokens import Tokens
from ..errors import MMRobustError, check_int, unknown_name
from .encoders import create_encoder
from .fusion import RowFuser, create_fusion

_TAKEN = frozenset(dir(nn.ModuleDict()))  # names a ModuleDict key cannot have ('to', 'train', 'keys', ...)


def check_modality_names(names: Sequence[str]) -> None:
    """Modality names key the per-modality modules (encoders, heads): a name torch cannot use as a
    key is a one-line error here rather than a KeyError from deep inside `nn.ModuleDict`."""
    for name in names:
        if not isinstance(name, str) or not name or "." in name or name in _TAKEN:
            raise MMRobustError(
                f"modality name {name!r} cannot name a model part: it is empty, contains '.', or is an "
                "attribute of torch modules (like 'to', 'train', 'type', 'keys'); rename the modality"
            )


def modality_list(modalities: str | Sequence[str] | None) -> list[str] | None:
    """A `modalities` restriction as a list (None: all): one name alone is that modality, not its letters."""
    if modalities is None:
        return None
    return [modalities] if isinstance(modalities, str) else list(modalities)


def used_modalities(spec: DataSpec, use: str | Sequence[str] | None) -> tuple[str, ...]:
    """The modalities a model restricted to `use` reads (None: all), in the data's order."""
    use = modality_list(use)
    if use is not None and not use:
        raise MMRobustError("a model must use at least one modality")
    for name in use or ():
        if name not in spec.modality_names:
            raise unknown_name("modality", name, spec.modality_names)
    return tuple(m for m in spec.modality_names if use is None or m in use)


def encode_present(batch: Batch, present: Tensor, encode_modality: Callable[[str, Tensor], Tensor], dim: int) -> Tensor:
    """(B, M, dim) tokens: each modality encoded on the rows where `present` says it is (gather ->
    encode -> scatter), zeros elsewhere, so absent placeholders are never read."""
    z = present.new_zeros((len(batch), len(batch.modalities), dim), dtype=torch.float32)
    for j, m in enumerate(batch.modalities):
        rows = present[:, j]
        if rows.all():
            z[:, j] = encode_modality(m, batch.inputs[m])
        elif rows.any():
            z[rows, j] = encode_modality(m, batch.inputs[m][rows])
    return z


class MultimodalModel(nn.Module):
    use_mask: Tensor  # (M,) bool buffer: which modalities the model reads

    def __init__(
        self,
        spec: DataSpec,
        fusion: str = "transformer",
        dim: int = 64,
        use: str | Sequence[str] | None = None,
        encoders: nn.ModuleDict | None = None,
        fused_by_subclass: bool = False,
    ) -> None:
        """The toolkit's encoders (or the given `encoders`, one per used modality, each giving
        (n, dim)) and the registered `fusion`; a subclass that fuses its own way (overriding `fuse`)
        passes `fused_by_subclass` and no fusion module is built."""
        super().__init__()
        self.spec, self.dim, self.fusion_name = spec, check_int(dim, "dim", 1), fusion
        check_modality_names(spec.modality_names)
        self.used = used_modalities(spec, use)
        self.register_buffer("use_mask", torch.tensor([m in self.used for m in spec.modality_names]), persistent=False)
        self.encoders = encoders if encoders is not None else nn.ModuleDict(
            {m.name: create_encoder(m.encoder_name, m.shape, dim) for m in spec.modalities if m.name in self.used}
        )
        if not fused_by_subclass:
            self.fusion = create_fusion(fusion, len(spec.modalities), dim, spec.num_classes)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.spec.modality_names

    def encode_modality(self, modality: str, x: Tensor) -> Tensor:
        if modality not in self.encoders:  # an unused modality: a placeholder that fuse never reads
            return x.new_zeros((len(x), self.dim), dtype=torch.float32)
        x = x.float() if x.is_floating_point() else x  # float64 (e.g. collated numpy arrays) runs in float32
        return self.encoders[modality](x)  # (n, D)

    def check_batch(self, batch: Batch) -> None:
        """A one-line error for a batch of other data, instead of a shape error deep in an encoder."""
        if batch.modalities != self.modalities:
            raise MMRobustError(
                f"the batch has modalities {list(batch.modalities)} but the model expects {list(self.modalities)}"
            )
        for m in self.spec.modalities:
            shape = tuple(batch.inputs[m.name].shape[1:])
            if m.name in self.used and shape != tuple(m.shape):
                raise MMRobustError(
                    f"modality '{m.name}' has per-sample shape {shape} but the model expects {tuple(m.shape)}"
                )

    def encode(self, batch: Batch) -> Tokens:
        self.check_batch(batch)
        present = batch.present & self.use_mask
        return Tokens(encode_present(batch, present, self.encode_modality, self.dim), present, self.modalities)

    def fuse(self, tokens: Tokens) -> Tensor:
        out = self.fusion(tokens.with_present(tokens.present & self.use_mask))  # (B, C) logits, or (B, 1)
        return out.squeeze(-1) if self.spec.task == "regression" else out

    def prepare_fusion(self, z: Tensor) -> RowFuser | None:
        """For `fuse` of many (token row of `z` (R, M, D), mask) pairs: a function (rows, present)
        -> those pairs' outputs, with each row's mask-independent work done once here (the audit
        fuses every sample under every subset's mask). None when this model fuses its own way or its
        fusion (e.g. a user-registered one) has no `prepare`."""
        if type(self).fuse is not MultimodalModel.fuse:  # a model that fuses its own way (may have no `fusion`)
            return None
        prepare = getattr(self.fusion, "prepare", None)
        if prepare is None:
            return None
        fuse_prepared = prepare(z)

        def fuse_rows(rows: Tensor, present: Tensor) -> Tensor:
            out = fuse_prepared(rows, present & self.use_mask)
            return out.squeeze(-1) if self.spec.task == "regression" else out

        return fuse_rows

    def forward(self, batch: Batch) -> Tensor:
        return self.fuse(self.encode(batch))
