"""The audit engine: encode the test set once, fuse it under every scenario.

Mask-only scenarios (subsets, missing proportions, imbalanced rates) reuse the cached
tokens and are fused in one vectorised call over scenarios x samples. A scenario that
changes input values (noise) re-encodes only the modalities it touches, and only the
rows whose values changed. `naive_outputs` runs each scenario through the full model
instead; the tests hold the two to 1e-5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from ..corruption import MaskCorruption
from ..data.batch import Batch
from ..data.dataset import MultimodalData
from ..methods.base import Method
from ..models.tokens import Tokens
from .scenarios import Scenario


def mask_hash(present: Tensor) -> str:
    return hashlib.sha256(present.cpu().numpy().tobytes()).hexdigest()[:16]


class _Encoded:
    """The test set encoded once, with chunked access so memory stays bounded."""

    def __init__(self, method: Method, data: MultimodalData, chunk: int, device: torch.device) -> None:
        self.method, self.chunk, self.device = method, chunk, device
        parts = [method.encode(b.to(device)).z for b in data.batches(chunk)]
        self.tokens = Tokens(torch.cat(parts), data.present.to(device), data.modalities)

    def encode_rows(self, modality: str, x: Tensor) -> Tensor:
        parts = [
            self.method.encode_modality(modality, x[i : i + self.chunk].to(self.device))
            for i in range(0, len(x), self.chunk)
        ]
        return torch.cat(parts) if parts else x.new_zeros((0, self.tokens.z.shape[-1]))

    def fuse_many(self, presents: Tensor) -> Tensor:
        """Fuse the cached tokens under S masks at once: (S, N, M) -> (S, N, ...)."""
        n_scen, n = presents.shape[:2]
        z = self.tokens.z
        per_call = max(1, self.chunk * 8 // max(n, 1))  # scenarios per fused call
        outs = []
        for s in range(0, n_scen, per_call):
            p = presents[s : s + per_call].to(self.device)
            k = len(p)
            zz = z.unsqueeze(0).expand(k, *z.shape).reshape(k * n, *z.shape[1:])  # (k*N, M, D)
            out = self.fuse_chunked(Tokens(zz, p.reshape(k * n, -1), self.tokens.modalities))
            outs.append(out.reshape(k, n, *out.shape[1:]))
        return torch.cat(outs)

    def fuse_chunked(self, tokens: Tokens) -> Tensor:
        step = self.chunk * 8
        parts = [
            self.method.fuse(Tokens(tokens.z[i : i + step], tokens.present[i : i + step], tokens.modalities))
            for i in range(0, len(tokens), step)
        ]
        return torch.cat(parts)


@torch.no_grad()
def scenario_outputs(
    method: Method, data: MultimodalData, scenarios: Sequence[Scenario], seed: int, chunk: int = 512
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Outputs (N, ...) of `method` on `data` under every scenario, plus each scenario's mask hash."""
    method.modules().eval()
    device = next(method.modules().parameters()).device
    enc = _Encoded(method, data, chunk, device)
    full = data.batch(slice(None))
    masks: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}
    for sc in scenarios:
        if isinstance(sc.corruption, MaskCorruption):
            masks[sc.name] = sc.corruption.new_present(full.present, full.modalities, sc.generator(seed))
    if masks:
        fused = enc.fuse_many(torch.stack(list(masks.values())))
        outputs.update({name: out.cpu() for name, out in zip(masks, fused, strict=True)})
    hashes = {name: mask_hash(p) for name, p in masks.items()}
    for sc in scenarios:
        if sc.name in outputs:
            continue
        if sc.corruption.stage == "token":
            tokens = sc.corruption(enc.tokens, sc.generator(seed))
        else:
            tokens = _reencode_changed(enc, full, sc.corruption(full, sc.generator(seed)))
        hashes[sc.name] = mask_hash(tokens.present)
        outputs[sc.name] = enc.fuse_chunked(tokens).cpu()
    return outputs, hashes


def _reencode_changed(enc: _Encoded, before: Batch, after: Batch) -> Tokens:
    """Cached tokens, with only the rows whose input values changed re-encoded."""
    z = enc.tokens.z
    for j, m in enumerate(before.modalities):
        if after.inputs[m] is before.inputs[m]:
            continue
        n = len(before)
        changed = (after.inputs[m].reshape(n, -1) != before.inputs[m].reshape(n, -1)).any(dim=1)
        rows = (changed & after.present[:, j]).nonzero().flatten()
        if len(rows):
            z = z.clone() if z is enc.tokens.z else z
            z[rows.to(z.device), j] = enc.encode_rows(m, after.inputs[m][rows])
    return Tokens(z, after.present.to(z.device), enc.tokens.modalities)


@torch.no_grad()
def naive_outputs(
    method: Method, data: MultimodalData, scenarios: Sequence[Scenario], seed: int, batch_size: int = 512
) -> dict[str, Tensor]:
    """Reference path: corrupt the whole test set, then run the full model on it, per scenario."""
    method.modules().eval()
    device = next(method.modules().parameters()).device
    full = data.batch(slice(None))
    outputs = {}
    for sc in scenarios:
        g = sc.generator(seed)
        if sc.corruption.stage == "token" and not isinstance(sc.corruption, MaskCorruption):
            tokens = sc.corruption(method.encode(full.to(device)), g)
            outputs[sc.name] = method.fuse(tokens).cpu()
            continue
        corrupted = sc.corruption(full, g)
        parts = [
            method.predict(_slice(corrupted, i, batch_size).to(device)).cpu()
            for i in range(0, len(corrupted), batch_size)
        ]
        outputs[sc.name] = torch.cat(parts)
    return outputs


def _slice(batch: Batch, start: int, size: int) -> Batch:
    s = slice(start, start + size)
    return Batch({m: x[s] for m, x in batch.inputs.items()}, batch.present[s], batch.target[s], batch.modalities)
