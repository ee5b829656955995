"""The audit engine: encode the test set once, fuse it under every scenario.

Mask-only scenarios (subsets, missing proportions, imbalanced rates) reuse the cached
tokens. A scenario that changes input values (noise) re-encodes only the modalities it
touches, and only the rows whose values changed. Every scenario then reduces to one
(token row, mask) pair per sample, and each distinct pair is fused once, in chunks, for
all scenarios together: scenarios overlap heavily (a sample that `Missing` spares keeps the
clean mask; noise changes the tokens of a few rows only). `naive_outputs` runs each
scenario through the full model instead; the tests hold the two to 1e-5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import Tensor

from ..corruption import GaussianNoise, MaskCorruption
from ..data.batch import Batch
from ..data.dataset import MultimodalData
from ..errors import unknown_name
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


class _FusionPlan:
    """Each scenario as (token row, mask) per sample, so that each distinct pair is fused once.

    Token rows index a bank: the cached tokens first, then the rows that a value-changing
    scenario altered.
    """

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.bank = [tokens.z]  # blocks of token rows, (n_i, M, D) each
        self.bank_rows = len(tokens)
        self.rows: dict[str, Tensor] = {}  # scenario -> (N,) bank row per sample
        self.presents: dict[str, Tensor] = {}  # scenario -> (N, M) mask

    def add(self, name: str, tokens: Tokens) -> None:
        base = self.tokens.z
        row = torch.arange(len(base), device=base.device)
        if tokens.z is not base:
            changed = (tokens.z != base).flatten(1).any(dim=1).nonzero().flatten()
            self.bank.append(tokens.z[changed])
            row[changed] = self.bank_rows + torch.arange(len(changed), device=base.device)
            self.bank_rows += len(changed)
        self.rows[name], self.presents[name] = row, tokens.present

    def fuse(self, method: Method, chunk: int) -> dict[str, Tensor]:
        """Outputs (N, ...) per scenario, fusing `chunk` distinct pairs per call."""
        if not self.rows:
            return {}
        rows = torch.cat(list(self.rows.values()))  # (S*N,)
        presents = torch.cat(list(self.presents.values()))  # (S*N, M)
        pair = _pair_ids(rows, presents)  # (S*N,) dense id of each (row, mask) pair
        index = torch.arange(len(pair), device=pair.device)
        first = index.new_full((int(pair.max()) + 1,), len(pair))
        first = first.scatter_reduce(0, pair, index, "amin")  # (U,) first occurrence of each pair
        bank = torch.cat(self.bank)  # (R, M, D)
        # group the distinct pairs by mask, so each fused call shares one mask (fusions exploit that)
        mask_id = _pair_ids(torch.zeros_like(first), presents[first])  # (U,)
        order = torch.argsort(mask_id, stable=True)
        sizes = torch.unique_consecutive(mask_id[order], return_counts=True)[1].tolist()
        outs = [
            method.fuse(Tokens(bank[rows[i]], presents[i], self.tokens.modalities))
            for group in first[order].split(sizes)
            for i in group.split(chunk)
        ]
        fused_sorted = torch.cat(outs)  # (U, ...) in mask order
        fused = torch.empty_like(fused_sorted)
        fused[order] = fused_sorted
        fused = fused[pair]  # (S*N, ...)
        per_scenario = fused.unflatten(0, (len(self.rows), len(self.tokens)))  # (S, N, ...)
        return {name: out.cpu() for name, out in zip(self.rows, per_scenario, strict=True)}


def _pair_ids(rows: Tensor, presents: Tensor) -> Tensor:
    """Dense ids 0..U-1 of the distinct (row, mask) pairs, folding in 32 modalities at a time."""
    ids = rows
    for start in range(0, presents.shape[1], 32):
        bits = presents[:, start : start + 32].long()  # (K, <=32)
        word = (bits << torch.arange(bits.shape[1], device=bits.device)).sum(dim=1)  # < 2^32
        ids = torch.unique(ids * 2**32 + word, return_inverse=True)[1]  # ids stay < 2^31
    return ids


@torch.no_grad()
def scenario_outputs(
    method: Method, data: MultimodalData, scenarios: Sequence[Scenario], seed: int, chunk: int = 512
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Outputs (N, ...) of `method` on `data` under every scenario, plus each scenario's mask hash."""
    method.modules().eval()
    device = next(method.modules().parameters()).device
    enc = _Encoded(method, data, chunk, device)
    full = data.batch(slice(None))
    plan = _FusionPlan(enc.tokens)
    hashes: dict[str, str] = {}
    for sc in scenarios:
        corruption, generator = sc.corruption, sc.generator(seed)
        if isinstance(corruption, MaskCorruption):
            present = corruption.new_present(full.present, full.modalities, generator)
            tokens = enc.tokens.with_present(present.to(device))
        elif corruption.stage == "token":
            tokens = corruption(enc.tokens, generator)
        elif isinstance(corruption, GaussianNoise):
            tokens = _reencode_noised(enc, full, corruption, generator)
        else:
            tokens = _reencode_changed(enc, full, corruption(full, generator))
        hashes[sc.name] = mask_hash(tokens.present)
        plan.add(sc.name, tokens)
    return plan.fuse(method, chunk), hashes


def _reencode_noised(enc: _Encoded, full: Batch, noise: GaussianNoise, generator: torch.Generator) -> Tokens:
    """Cached tokens with the noised rows re-encoded, without copying or comparing whole inputs."""
    if noise.modality not in full.modalities:
        raise unknown_name("modality", noise.modality, full.modalities)
    rows, noised = noise.noised_rows(full.value(noise.modality), full.present, full.modalities, generator)
    z = enc.tokens.z.clone()
    z[rows.to(z.device), full.modalities.index(noise.modality)] = enc.encode_rows(noise.modality, noised)
    return Tokens(z, enc.tokens.present, enc.tokens.modalities)


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
