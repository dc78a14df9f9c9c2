"""Sharding embedding tables across chips (TorchRec-style model parallelism for the sparse part).

Table-wise sharding places whole tables on chips, largest first onto the least-loaded chip
(greedy, by bytes). For a batch of B samples every chip looks up its tables for all B samples,
then an all-to-all hands each chip the pooled embeddings of its B/s slice, and the dense part
runs data-parallel on B/s samples per chip (Naumov et al., DLRM, arXiv 1906.00091, section 4;
ISCA'25 section 5.4: remote sparse networks plus a merge network).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableShards:
    shards: int
    tables: tuple[tuple[int, ...], ...]  # table indices per chip
    bytes_per_chip: tuple[float, ...]
    lookups_per_chip: tuple[int, ...]  # lookups per sample on each chip

    @property
    def max_bytes(self) -> float:
        return max(self.bytes_per_chip)

    def lookup_share(self) -> float:
        """The busiest chip's share of all lookups (sets the sparse stage's time)."""
        return max(self.lookups_per_chip) / max(1, sum(self.lookups_per_chip))

    def tables_on_busiest(self) -> int:
        return max(len(t) for t in self.tables)


def shard_table_wise(rows: list[int], pooling: list[int], row_bytes: float, shards: int) -> TableShards:
    if shards < 1:
        raise ValueError("shards must be >= 1")
    order = sorted(range(len(rows)), key=lambda t: -rows[t])
    load = [0.0] * shards
    placed: list[list[int]] = [[] for _ in range(shards)]
    for t in order:
        c = min(range(shards), key=lambda i: (load[i], len(placed[i])))
        placed[c].append(t)
        load[c] += rows[t] * row_bytes
    return TableShards(shards, tuple(tuple(sorted(p)) for p in placed), tuple(load),
                       tuple(sum(pooling[t] for t in p) for p in placed))
