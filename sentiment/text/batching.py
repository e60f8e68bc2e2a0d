"""From token lists to padded id tensors: per-batch padding and length-bucketed batches.

Ids are kept as one flat array plus offsets (a ragged array), so a batch is built with a
few vectorised numpy operations and no per-example Python in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from sentiment.errors import SentimentError
from sentiment.text.vocab import PAD_ID, UNK_ID, Vocab


def pad_or_truncate(ids: Sequence[int], max_len: int = 500, pad: int = PAD_ID) -> list[int]:
    """The reference's fixed-length form: cut to `max_len`, or fill with `pad` up to it."""
    ids = list(ids)
    if len(ids) > max_len:
        return ids[:max_len]
    return ids + [pad] * (max_len - len(ids))


@dataclass
class Encoded:
    """Ragged ids: review i is `ids[offsets[i]:offsets[i] + lengths[i]]`."""

    ids: np.ndarray  # int32, flat
    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64, each in [1, max_len]

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i] + self.lengths[i]]

    def has_other_than(self, ids) -> list[bool]:
        """Whether each review holds a token outside `ids` (the unknown token, say): one that is
        only unknown words tells a model nothing."""
        other = ~np.isin(self.ids, list(ids))
        return [bool(other[o : o + n].any()) for o, n in zip(self.offsets, self.lengths, strict=True)]


class _UnknownIsUnk(dict):
    def __missing__(self, token: str) -> int:
        return UNK_ID


def encode(token_lists: Iterable[Sequence[str]], vocab: Vocab, max_len: int = 500) -> Encoded:
    """Look up and truncate every review. An empty review becomes a single `<unk>`,
    so every review has at least one position for the models to read."""
    if max_len < 1:
        raise SentimentError(f"max_len must be at least 1, got {max_len}")
    lookup = _UnknownIsUnk(vocab.stoi).__getitem__  # a C-level call per token; unknown words -> <unk>
    flat_ids: list[int] = []
    lengths_list: list[int] = []
    for tokens in token_lists:
        ids = list(map(lookup, tokens[:max_len])) or [UNK_ID]
        flat_ids += ids
        lengths_list.append(len(ids))
    lengths = np.array(lengths_list, dtype=np.int64)
    offsets = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1], out=offsets[1:])
    flat = np.array(flat_ids, dtype=np.int32)
    return Encoded(ids=flat, offsets=offsets, lengths=lengths)


def pad_batch(enc: Encoded, index: np.ndarray, *, min_len: int = 1, multiple: int = 1, pad: int = PAD_ID):
    """Ids `[B, T]` padded to the longest review of this batch (at least `min_len`, rounded up to a
    multiple of `multiple`), and lengths `[B]`."""
    index = np.asarray(index, dtype=np.int64)
    lengths = enc.lengths[index]
    width = max(int(lengths.max()), min_len)
    width = -(-width // multiple) * multiple
    pos = np.arange(width, dtype=np.int64)
    valid = pos[None, :] < lengths[:, None]
    gather = np.where(valid, enc.offsets[index][:, None] + pos[None, :], 0)
    ids = np.where(valid, enc.ids[gather], pad).astype(np.int64)
    import torch  # here, not at the top: `sentiment predict` encodes a few texts without torch

    return torch.from_numpy(ids), torch.from_numpy(lengths.copy())


def full_lengths(ids, lengths=None):
    """`lengths [B]` on `ids`' device and within `1..T` for ids `[B, T]`; every review full length
    when not given. What every text model's forward starts from."""
    import torch

    batch, steps = ids.shape
    if lengths is None:
        return torch.full((batch,), steps, dtype=torch.long, device=ids.device)
    return lengths.to(ids.device).clamp(1, steps)


def collate(seqs: Sequence[Sequence[int]], *, max_len: int = 500, pad: int = PAD_ID):
    """DataLoader-style collate: pad a list of id lists to the longest (<= `max_len`); return ids and lengths."""
    import torch

    lengths = torch.tensor([max(1, min(len(s), max_len)) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[:max_len]
        if s:
            out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        else:
            out[i, 0] = UNK_ID
    return out, lengths


class BucketBatchSampler:
    """Batches of similar length: fewer pads, same examples.

    Each epoch: shuffle all indices (seed + epoch), cut them into pools of
    `batch_size * pool_batches`, sort each pool by length, cut pools into batches,
    and shuffle the batch order. Every index appears exactly once per epoch.
    With `shuffle=False`, batches are simply consecutive in length order (for evaluation).

    `num_replicas`/`rank` give each process of a distributed run a disjoint share of the batches.
    `passes` makes an epoch that many shuffled passes over the data (a few-shot recipe's epoch).
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        passes: int = 1,
    ):
        if batch_size < 1:
            raise SentimentError(f"batch size must be at least 1, got {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.passes = passes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[np.ndarray]:
        return [b for p in range(self.passes) for b in self._one_pass(p)]

    def _one_pass(self, p: int) -> list[np.ndarray]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            rng = np.random.default_rng((self.seed, self.epoch) if p == 0 else (self.seed, self.epoch, p))
            perm = rng.permutation(n)
            pool = self.batch_size * self.pool_batches
            batches = []
            for start in range(0, n, pool):
                chunk = perm[start : start + pool]
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        return batches

    def __iter__(self) -> Iterator[np.ndarray]:
        batches = self._all_batches()
        if self.num_replicas > 1:
            # Equal batch counts on every rank, so collective operations stay in step.
            per_rank = len(batches) // self.num_replicas
            batches = batches[self.rank * per_rank : (self.rank + 1) * per_rank]
        return iter(batches)

    def __len__(self) -> int:
        n, bs = len(self.lengths), self.batch_size
        pool = bs * self.pool_batches
        chunks = [min(pool, n - s) for s in range(0, n, pool)] if self.shuffle else [n]
        count = sum(c // bs if self.drop_last else -(-c // bs) for c in chunks)
        if self.num_replicas > 1:
            return count * self.passes // self.num_replicas
        return count * self.passes


# Batch widths are rounded up to a multiple of this: oneDNN builds and caches a kernel for every input
# shape it meets, and one kernel per exact review length makes a run's memory grow without bound.
PAD_MULTIPLE = 16


def label_array(labels) -> np.ndarray:
    """Labels as the loss takes them: class indices as int64, ratings (any float) as float32."""
    labels = np.asarray(labels)
    return labels.astype(np.float32) if labels.dtype.kind == "f" else labels.astype(np.int64)


class TextBatches:
    """`(index, (ids, lengths), labels)` batches of similar-length reviews, padded per batch."""

    def __init__(
        self,
        enc: Encoded,
        labels: np.ndarray | None,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        pin_memory: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        pad: int = PAD_ID,
        passes: int = 1,
    ):
        self.enc = enc
        self.pad = pad
        self.labels = np.zeros(len(enc), dtype=np.int64) if labels is None else label_array(labels)
        self.sampler = BucketBatchSampler(
            enc.lengths, batch_size, shuffle=shuffle, seed=seed, num_replicas=num_replicas, rank=rank, passes=passes
        )
        self.pin_memory = pin_memory

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        import torch

        for index in self.sampler:
            ids, lengths = pad_batch(self.enc, index, multiple=PAD_MULTIPLE, pad=self.pad)
            labels = torch.from_numpy(self.labels[index])
            if self.pin_memory:
                ids, lengths, labels = ids.pin_memory(), lengths.pin_memory(), labels.pin_memory()
            yield index, (ids, lengths), labels
