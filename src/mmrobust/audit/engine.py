"""The audit engine: stream the test set in chunks; per chunk, encode once and fuse every scenario.

The test set is read `chunk` samples at a time (a whole number of draw blocks, scenarios.py), so
the engine's memory is bounded by the chunk, not by the test set. Within a chunk, mask-only
scenarios (subsets, missing proportions, imbalanced rates) reuse the chunk's cached tokens. A
scenario that changes input values (noise) re-encodes only the modalities it touches, and only
the rows whose values changed. Every scenario then reduces to one (token row, mask) pair per
sample, and each distinct pair is fused once, in batches, for all scenarios together: scenarios
overlap heavily (a sample that `Missing` spares keeps the clean mask; noise changes the tokens of
a few rows only). A chunk's outputs go to the caller (`audit` folds them into streaming metrics,
metrics.py) and are then dropped, with the rows each scenario left with no modality at all (`audit`
decides whether they are scored); the mask hashes are updated chunk by chunk.

Each scenario draws its randomness per draw block (`Scenario.blocks`), so the outputs do not
depend on the chunk size. `naive_outputs` corrupts the whole test set block by block and runs
each scenario through the full model instead; the tests hold the two to 1e-5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor

from ..corruption import GaussianNoise, MaskCorruption
from ..data.batch import Batch
from ..data.dataset import ChunkedData
from ..data.tokens import Tokens
from ..errors import MMRobustError, unknown_name
from ..methods.base import Method
from .scenarios import DRAW_BLOCK, Scenario

DEFAULT_CHUNK = 4 * DRAW_BLOCK  # samples streamed per step
BATCH_SIZE = 512  # rows per encoder / fusion call
FUSE_STEP, ENCODE_STEP = 64, 16  # fusion / encoder calls get a multiple of this many rows (`_padded`)


def mask_hash(present: Tensor) -> str:
    return hashlib.sha256(present.cpu().numpy().tobytes()).hexdigest()[:16]


Change = tuple[int, Tensor, Tensor | None]  # (modality index, changed test-set rows, their new inputs or None)


class DrawHash:
    """The hash of what a scenario drew: its (N, M) mask and, for scenarios that change values,
    which rows of which modality changed and, for inputs, to what (token values depend on the
    model, so token-stage noise contributes its rows only). Fed chunk by chunk in row order, it
    does not depend on the chunking (one stream per part); with nothing changed it is the mask hash."""

    def __init__(self, modalities: int) -> None:
        self.mask = hashlib.sha256()
        self.rows = [hashlib.sha256() for _ in range(modalities)]  # rows and values in separate streams:
        self.values = [hashlib.sha256() for _ in range(modalities)]  # their concatenation is chunk-free
        self.changed = False

    def update(self, present: Tensor, changes: Sequence[Change] = ()) -> None:
        self.mask.update(present.cpu().numpy().tobytes())
        for j, rows, values in changes:
            if len(rows):
                self.changed = True
                self.rows[j].update(rows.cpu().long().numpy().tobytes())
                if values is not None:
                    self.values[j].update(values.detach().cpu().contiguous().numpy().tobytes())

    def hexdigest(self) -> str:
        if not self.changed:
            return self.mask.hexdigest()[:16]
        parts = self.mask.hexdigest() + "".join(h.hexdigest() for h in (*self.rows, *self.values))
        return hashlib.sha256(parts.encode()).hexdigest()[:16]


def value_changes(before: Batch, after: Batch, start: int = 0) -> list[tuple[int, Tensor, Tensor]]:
    """The rows (offset by `start`) whose present inputs `after` changed, per modality, with their values."""
    out = []
    for j, m in enumerate(before.modalities):
        if after.inputs[m] is before.inputs[m]:
            continue
        n = len(before)
        rows = (after.inputs[m].reshape(n, -1) != before.inputs[m].reshape(n, -1)).any(dim=1) & after.present[:, j]
        index = rows.nonzero().flatten()
        out.append((j, index + start, after.inputs[m][index]))
    return out


def token_changes(before: Tokens, after: Tokens, start: int = 0) -> list[Change]:
    """The rows (offset by `start`) whose present tokens `after` changed, per modality (rows only)."""
    changed = (after.z != before.z).any(dim=-1) & after.present  # (B, M)
    return [(j, changed[:, j].nonzero().flatten().cpu() + start, None) for j in range(changed.shape[1])]


class ScenarioStream:
    """Iterate over the test set in chunks: per chunk, its targets, every scenario's outputs and the
    rows each scenario left with no modality present.

    `chunk` is rounded up to a whole number of draw blocks. `hashes()` (each scenario's mask
    hash, the hash of its whole (N, M) mask) is complete once the iteration has finished.

        stream = ScenarioStream(method, test, scenarios, seed=0)
        for target, outputs, empty in stream:   # scenario name -> (chunk, ...) outputs, (chunk,) bool
            ...
    """

    def __init__(
        self,
        method: Method,
        data: ChunkedData,
        scenarios: Sequence[Scenario],
        seed: int,
        chunk: int = DEFAULT_CHUNK,
        *,
        batch_size: int = BATCH_SIZE,
        draw_block: int = DRAW_BLOCK,
        progress: bool = False,
        per_scenario: bool = False,
    ) -> None:
        if chunk < 1 or batch_size < 1:
            raise MMRobustError(f"chunk and batch size must be positive, got {chunk} and {batch_size}")
        self.method, self.data, self.scenarios, self.seed = method, data, list(scenarios), seed
        self.chunk = -(-chunk // draw_block) * draw_block
        self.batch_size, self.draw_block, self.progress = batch_size, draw_block, progress
        self.per_scenario = per_scenario
        self._hashers = {sc.name: DrawHash(len(data.modalities)) for sc in self.scenarios}
        self._empty: dict[str, Tensor] = {}  # the current chunk's rows with no modality, per scenario

    def __iter__(self) -> Iterator[tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]]:
        self.method.modules().eval()
        device = next(self.method.modules().parameters()).device
        self._hashers = {sc.name: DrawHash(len(self.data.modalities)) for sc in self.scenarios}
        columns = (
            TextColumn(f"[bold]audit[/] {self.method.name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("samples"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, disable=not self.progress, transient=True) as bar:
            task = bar.add_task("", total=len(self.data))
            start = 0
            for batch in self.data.batches(self.chunk):
                if start % self.chunk or len(batch) > self.chunk:
                    raise MMRobustError(
                        f"the data yielded a batch of {len(batch)} rows at row {start}; "
                        f"the audit needs consecutive batches of {self.chunk}"
                    )
                self._empty = {}
                with torch.no_grad():
                    run = self._chunk_per_scenario if self.per_scenario else self._chunk
                    outputs = run(batch, start, device)
                yield batch.target, outputs, self._empty
                start += len(batch)
                bar.update(task, advance=len(batch))
        if start != len(self.data):
            raise MMRobustError(f"the data yielded {start} samples but has {len(self.data)}")

    def hashes(self) -> dict[str, str]:
        return {name: h.hexdigest() for name, h in self._hashers.items()}

    def _drew(self, name: str, present: Tensor, changes: Sequence[Change]) -> None:
        """Record what scenario `name` drew on the chunk: into its hash, and the rows it left empty."""
        self._hashers[name].update(present, changes)
        self._empty[name] = ~present.any(dim=1).cpu()

    def _chunk(self, batch: Batch, start: int, device: torch.device) -> dict[str, Tensor]:
        """Every scenario's outputs on the chunk of test-set rows [start, start + len(batch))."""
        enc = _Encoded(self.method, batch, self.batch_size, device)
        plan = _FusionPlan(enc.tokens)
        for sc in self.scenarios:
            corruption = sc.corruption
            blocks = list(sc.blocks(self.seed, start, len(batch), self.draw_block))
            changes: list[Change] = []
            if isinstance(corruption, MaskCorruption):
                present = torch.cat(
                    [corruption.new_present(batch.present[lo:hi], batch.modalities, g) for lo, hi, g in blocks]
                )
                tokens = enc.tokens.with_present(present.to(device))
            elif corruption.stage == "token":
                tokens = sc.apply(enc.tokens, self.seed, start, self.draw_block)
                changes = token_changes(enc.tokens, tokens, start)
            elif isinstance(corruption, GaussianNoise):
                tokens, changes = _reencode_noised(enc, batch, corruption, blocks, start)
            else:
                tokens, changes = _reencode_changed(enc, batch, sc, blocks, start)
            self._drew(sc.name, tokens.present, changes)
            plan.add(sc.name, tokens)
        return plan.fuse(self.method, self.batch_size)

    def _chunk_per_scenario(self, batch: Batch, start: int, device: torch.device) -> dict[str, Tensor]:
        """The reference path on one chunk: each scenario corrupts the chunk, then the whole model
        runs on it (`method.predict`; token-stage corruptions between `encode` and `fuse`)."""
        method, size, outputs = self.method, self.batch_size, {}
        for sc in self.scenarios:
            changes: Sequence[Change]
            if sc.corruption.on_tokens:
                clean = method.encode(batch.to(device))
                tokens = sc.apply(clean, self.seed, start, self.draw_block)
                present, output, changes = tokens.present, method.fuse(tokens), token_changes(clean, tokens, start)
            else:
                corrupted = sc.apply(batch, self.seed, start, self.draw_block)
                rows = range(0, len(corrupted), size)
                present, changes = corrupted.present, value_changes(batch, corrupted, start)
                output = torch.cat([method.predict(corrupted.rows(slice(i, i + size)).to(device)) for i in rows])
            self._drew(sc.name, present, changes)
            outputs[sc.name] = output.cpu()
        return outputs


class _Encoded:
    """One chunk encoded once (in batches), and re-encoding of single modalities' rows."""

    def __init__(self, method: Method, batch: Batch, batch_size: int, device: torch.device) -> None:
        self.method, self.batch_size, self.device = method, batch_size, device
        parts = [
            method.encode(batch.rows(slice(i, i + batch_size)).to(device)).z for i in range(0, len(batch), batch_size)
        ]
        self.tokens = Tokens(torch.cat(parts), batch.present.to(device), batch.modalities)  # (C, M, D)

    def encode_rows(self, modality: str, x: Tensor) -> Tensor:
        parts = []
        for i in torch.arange(len(x)).split(self.batch_size):
            rows = x[_padded(i, self.batch_size, ENCODE_STEP)].to(self.device)
            parts.append(self.method.encode_modality(modality, rows)[: len(i)])
        return torch.cat(parts) if parts else self.tokens.z.new_zeros((0, self.tokens.z.shape[-1]))


class _FusionPlan:
    """Each scenario as (token row, mask) per sample, so that each distinct pair is fused once.

    Token rows index a bank: the cached tokens first, then the rows that a value-changing
    scenario altered.
    """

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self.bank = [tokens.z]  # blocks of token rows, (n_i, M, D) each
        self.bank_rows = len(tokens)
        self.rows: dict[str, Tensor] = {}  # scenario -> (C,) bank row per sample
        self.presents: dict[str, Tensor] = {}  # scenario -> (C, M) mask

    def add(self, name: str, tokens: Tokens) -> None:
        base = self.tokens.z
        row = torch.arange(len(base), device=base.device)
        if tokens.z is not base:
            changed = (tokens.z != base).flatten(1).any(dim=1).nonzero().flatten()
            self.bank.append(tokens.z[changed])
            row[changed] = self.bank_rows + torch.arange(len(changed), device=base.device)
            self.bank_rows += len(changed)
        self.rows[name], self.presents[name] = row, tokens.present

    def fuse(self, method: Method, batch_size: int) -> dict[str, Tensor]:
        """Outputs (C, ...) per scenario, fusing `batch_size` distinct pairs per call."""
        if not self.rows:
            return {}
        rows = torch.cat(list(self.rows.values()))  # (S*C,)
        presents = torch.cat(list(self.presents.values()))  # (S*C, M)
        pair = _pair_ids(rows, presents)  # (S*C,) dense id of each (row, mask) pair
        index = torch.arange(len(pair), device=pair.device)
        first = index.new_full((int(pair.max()) + 1,), len(pair))
        first = first.scatter_reduce(0, pair, index, "amin")  # (U,) first occurrence of each pair
        bank = torch.cat(self.bank)  # (R, M, D)
        whole = _padded(torch.arange(len(bank), device=bank.device), len(bank) + FUSE_STEP, FUSE_STEP)
        prepared = method.prepare_fusion(bank[whole])  # each row's mask-independent fusion work, done once

        def fuse(p: Tensor) -> Tensor:
            if prepared is not None:
                return prepared(rows[p], presents[p])
            return method.fuse(Tokens(bank[rows[p]], presents[p], self.tokens.modalities))

        # group the distinct pairs by mask, so each fused call shares one mask (fusions exploit that)
        mask_id = _pair_ids(torch.zeros_like(first), presents[first])  # (U,)
        order = torch.argsort(mask_id, stable=True)
        sizes = torch.unique_consecutive(mask_id[order], return_counts=True)[1].tolist()
        outs = [
            fuse(p)[: len(i)]
            for group in first[order].split(sizes)
            for i in group.split(batch_size)
            for p in [_padded(i, batch_size, FUSE_STEP)]
        ]
        fused_sorted = torch.cat(outs)  # (U, ...) in mask order
        fused = torch.empty_like(fused_sorted)
        fused[order] = fused_sorted
        return self._per_scenario(fused[pair])

    def _per_scenario(self, fused: Tensor) -> dict[str, Tensor]:
        """(S*C, ...) outputs, scenario after scenario, as scenario -> (C, ...)."""
        per_scenario = fused.unflatten(0, (len(self.rows), len(self.tokens)))  # (S, C, ...)
        return {name: out.cpu() for name, out in zip(self.rows, per_scenario, strict=True)}


def _padded(index: Tensor, batch_size: int, step: int) -> Tensor:
    """`index` with its first entry repeated up to a multiple of `step` rows (at most `batch_size`).

    Rows do not interact in the model, so the padding only costs its compute (about 1% of a
    default audit; encoders, the costly part, get the finer step), and the model sees a bounded
    set of batch shapes instead of a new one at almost every call: with arbitrary shapes the
    process's memory kept growing with the number of chunks (PyTorch's CPU kernels and the
    allocator keep memory per shape; benchmarks/README.md §5).
    """
    size = min(-(-len(index) // step) * step, max(batch_size, len(index)))
    return torch.cat([index, index[:1].expand(size - len(index))]) if size > len(index) else index


def _pair_ids(rows: Tensor, presents: Tensor) -> Tensor:
    """Dense ids 0..U-1 of the distinct (row, mask) pairs, folding in 32 modalities at a time."""
    ids = rows
    for start in range(0, presents.shape[1], 32):
        bits = presents[:, start : start + 32].long()  # (K, <=32)
        word = (bits << torch.arange(bits.shape[1], device=bits.device)).sum(dim=1)  # < 2^32
        ids = torch.unique(ids * 2**32 + word, return_inverse=True)[1]  # ids stay < 2^31
    return ids


def _reencode_noised(
    enc: _Encoded, batch: Batch, noise: GaussianNoise, blocks: list[tuple[int, int, torch.Generator]], start: int
) -> tuple[Tokens, list[Change]]:
    """Cached tokens with the noised rows re-encoded, without copying or comparing whole inputs; and
    what changed (the noised rows whose values differ, e.g. not under sigma 0)."""
    if noise.modality not in batch.modalities:
        raise unknown_name("modality", noise.modality, batch.modalities)
    j = batch.modalities.index(noise.modality)
    value, rows, noised = batch.value(noise.modality), [], []
    for lo, hi, g in blocks:
        block_rows, block_noised = noise.noised_rows(value[lo:hi], batch.present[lo:hi], batch.modalities, g)
        rows.append(block_rows + lo)
        noised.append(block_noised)
    hit, values = torch.cat(rows), torch.cat(noised)
    if not len(hit):
        return enc.tokens, []
    z = enc.tokens.z.clone()
    z[hit.to(z.device), j] = enc.encode_rows(noise.modality, values)
    changed = (values.reshape(len(hit), -1) != value[hit].reshape(len(hit), -1)).any(dim=1)
    return Tokens(z, enc.tokens.present, enc.tokens.modalities), [(j, hit[changed] + start, values[changed])]


def _reencode_changed(
    enc: _Encoded, batch: Batch, scenario: Scenario, blocks: list[tuple[int, int, torch.Generator]], start: int
) -> tuple[Tokens, list[Change]]:
    """Cached tokens, with only the rows whose input values the scenario changed re-encoded; and
    what changed, per modality in row order."""
    z, presents = enc.tokens.z, []
    per_modality: dict[int, list[tuple[Tensor, Tensor]]] = {}
    for lo, hi, g in blocks:
        before = batch.rows(slice(lo, hi))
        after = scenario.corruption(before, g)
        presents.append(after.present)
        for j, rows, values in value_changes(before, after):
            per_modality.setdefault(j, []).append((rows + lo, values))
            if len(rows):
                z = z.clone() if z is enc.tokens.z else z
                z[(rows + lo).to(z.device), j] = enc.encode_rows(batch.modalities[j], values)
    changes: list[Change] = [
        (j, torch.cat([r for r, _ in parts]) + start, torch.cat([v for _, v in parts]))
        for j, parts in sorted(per_modality.items())
    ]
    return Tokens(z, torch.cat(presents).to(z.device), enc.tokens.modalities), changes


def scenario_outputs(
    method: Method,
    data: ChunkedData,
    scenarios: Sequence[Scenario],
    seed: int,
    chunk: int = DEFAULT_CHUNK,
    *,
    batch_size: int = BATCH_SIZE,
    draw_block: int = DRAW_BLOCK,
    per_scenario: bool = False,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Outputs (N, ...) of `method` on `data` under every scenario, plus the hash of what each drew
    (the streamed engine with its chunks put back together: for tests and small sets)."""
    stream = ScenarioStream(
        method, data, scenarios, seed, chunk, batch_size=batch_size, draw_block=draw_block, per_scenario=per_scenario
    )
    parts: dict[str, list[Tensor]] = {sc.name: [] for sc in scenarios}
    for _, outputs, _ in stream:
        for name, out in outputs.items():
            parts[name].append(out)
    return {name: torch.cat(p) for name, p in parts.items()}, stream.hashes()


def naive_outputs(
    method: Method,
    data: ChunkedData,
    scenarios: Sequence[Scenario],
    seed: int,
    batch_size: int = BATCH_SIZE,
    *,
    draw_block: int = DRAW_BLOCK,
) -> dict[str, Tensor]:
    """Reference path: corrupt the whole test set, then run the full model on it, per scenario."""
    whole = max(len(data), 1)
    return scenario_outputs(
        method, data, scenarios, seed, whole, batch_size=batch_size, draw_block=draw_block, per_scenario=True
    )[0]
