"""Sharding embedding tables across chips (TorchRec-style model parallelism for the sparse part).

Table-wise sharding places whole tables on chips, largest first onto the least-loaded chip
(greedy, by bytes). For a batch of B samples every chip looks up its tables for all B samples,
then an all-to-all hands each chip the pooled embeddings of its B/s slice, and the dense part
runs data-parallel on B/s samples per chip (Naumov et al., DLRM, arXiv 1906.00091, section 4;
ISCA'25 section 5.4: remote sparse networks plus a merge network).

Row-wise sharding splits every table's rows evenly over the chips (TorchRec's ``ROW_WISE``), for
tables too large for one chip: each chip holds 1/s of every table and serves the lookups that
fall in its rows (1/s of all, with uniform indices), producing partial pooled sums of every table
for all B samples; a reduce-scatter sums them and leaves each chip its B/s slice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableShards:
    shards: int
    tables: tuple[tuple[int, ...], ...]  # table indices per chip
    bytes_per_chip: tuple[float, ...]
    lookups_per_chip: tuple[float, ...]  # lookups per sample on each chip
    scheme: str = "table"  # "table" (whole tables per chip) or "row" (every table split by rows)

    @property
    def max_bytes(self) -> float:
        return max(self.bytes_per_chip)

    def lookup_share(self) -> float:
        """The busiest chip's share of all lookups (sets the sparse stage's time)."""
        return max(self.lookups_per_chip) / max(1, sum(self.lookups_per_chip))

    def tables_on_busiest(self) -> int:
        return max(len(t) for t in self.tables)

    def exchanged_tables(self) -> int:
        """Pooled embeddings per sample that the busiest chip exchanges: its own tables
        (table-wise all-to-all) or partial sums of every table (row-wise reduce-scatter)."""
        return len(self.tables[0]) if self.scheme == "row" else self.tables_on_busiest()


def shard_row_wise(rows: list[int], pooling: list[int], row_bytes: float, shards: int) -> TableShards:
    """Every table split evenly by rows over ``shards`` chips (the first ``rows % shards`` chips
    take one row more)."""
    if shards < 1:
        raise ValueError("shards must be >= 1")
    per = [sum(-(-r // shards) if c < r % shards or r % shards == 0 else r // shards for r in rows)
           for c in range(shards)]
    everything = tuple(range(len(rows)))
    return TableShards(shards, (everything,) * shards, tuple(p * row_bytes for p in per),
                       (sum(pooling) / shards,) * shards, scheme="row")


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
