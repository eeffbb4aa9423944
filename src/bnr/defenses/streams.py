"""Deterministic side streams of examples for defenses that need a second data stream (a harmful, benign or
alignment set beside the user's batches).

`IndexedStream.batch(k)` is the k-th micro-batch of an endless stream (each epoch a seeded permutation cut
into micro-batches, like the loop's own `bnr.train.micro_batches`), computed from `k` alone: a hook that
draws batch number `step * grad_accum + micro` needs no state to resume exactly.
"""

from __future__ import annotations

from typing import Any

import torch

from bnr.config import Config, DataConfig, TrainConfig
from bnr.data.tokenize import Example, collate, encode_records
from bnr.errors import BnrError
from bnr.runs.fit import load_sampled
from bnr.train import epoch_order


class IndexedStream:
    """Micro-batches of `examples` (`batch_size` each) by index, reshuffled each epoch with `seed`."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int, what: str) -> None:
        if not examples:
            raise BnrError(f"{what}: no examples to draw from; give it data")
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.per_epoch = -(-len(examples) // batch_size)
        self._orders: dict[int, list[int]] = {}

    def batch(self, k: int) -> list[Example]:
        """The k-th micro-batch (0-based) of the stream."""
        epoch, i = divmod(k, self.per_epoch)
        if epoch not in self._orders:
            self._orders = {epoch: epoch_order(len(self.examples), self.seed, epoch)}
        idx = self._orders[epoch][i * self.batch_size : (i + 1) * self.batch_size]
        return [self.examples[j] for j in idx]

    def collated(self, k: int, pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The k-th micro-batch collated onto `device`."""
        return {name: t.to(device) for name, t in collate(self.batch(k), pad_id).items()}


def encoded(cfg: Config, tokenizer: Any, data: DataConfig, n: int | None, seed: int, what: str) -> list[Example]:
    """`n` records of `data` (all if None) drawn with `seed`, tokenized like the training data."""
    return encode_records(tokenizer, load_sampled(data, n, seed, what), cfg.template, cfg.max_length)


def stream_for(
    cfg: Config, tokenizer: Any, data: DataConfig, n: int | None, train: TrainConfig, seed: int, what: str
) -> IndexedStream:
    """An `IndexedStream` over `n` records of `data`, in micro-batches of `train.batch_size`."""
    return IndexedStream(encoded(cfg, tokenizer, data, n, seed, what), train.batch_size, seed, what)
