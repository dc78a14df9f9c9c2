"""Serving batched-inference models (ranking, encoders, vision): queries, dynamic batching, data-parallel chips.

An MLPerf DLRM-v2 query aggregates 100-700 user-item pairs (about 270 on average; mlperf.md
1.1); a BERT or ResNet-50 query is one sample. Each chip holds the whole model (NVIDIA ran
embeddings 100% on GPU) and serves the queries routed to it round-robin. A chip's batcher
starts a batch when the queued items reach the target batch or the oldest query has waited the
batching timeout; a batch of ``b`` items takes T(b), from the engine (the gpu engine for GPUs,
analytical otherwise) on a grid of batch sizes (interpolated). A query completes with its batch.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mtiasim.api import simulate, workload_graph
from mtiasim.compiler import CompileOptions
from mtiasim.compiler.quantize import activation_dtype
from mtiasim.graph.dtypes import nbytes
from mtiasim.serving.cost import engine_for
from mtiasim.serving.traffic import DATASET_OF, datasets
from mtiasim.system.collectives import alltoall_s, reduce_scatter_s
from mtiasim.system.embedding import TableShards, shard_row_wise, shard_table_wise
from mtiasim.system.plan import DoesNotFit
from mtiasim.system.spec import SystemSpec

BATCH_GRID = [2**i for i in range(7, 21)]  # 128 .. 1M pairs (ranking items are user-item pairs)
SAMPLE_GRID = [2**i for i in range(0, 14)]  # 1 .. 8192 samples (BERT sequences, ResNet images)


@dataclass(frozen=True)
class QueryMix:
    """Pairs per query: a clipped log-normal (``data/serving/datasets.yaml``, ``criteo_aggregated``:
    MLPerf DLRM-v2's 100-700 pairs per query, mean 270)."""

    mean: float
    cv: float
    low: int
    high: int

    @classmethod
    def of(cls, dataset: str) -> QueryMix:
        """The ``pairs`` distribution of a dataset in ``data/serving/datasets.yaml``."""
        d = datasets()[dataset]["pairs"]
        return cls(float(d["mean"]), float(d["cv"]), int(d["min"]), int(d["max"]))

    @classmethod
    def mlperf(cls) -> QueryMix:
        return cls.of("criteo_aggregated")

    @classmethod
    def single(cls) -> QueryMix:
        """One item per query (MLPerf bert, resnet50: a LoadGen sample is one sequence or image)."""
        return cls(1.0, 0.0, 1, 1)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        sigma = math.sqrt(math.log(1 + self.cv**2))
        x = rng.lognormal(math.log(self.mean) - sigma**2 / 2, sigma, n)
        return np.clip(np.rint(x), self.low, self.high).astype(int)


def batch_workload(model: str) -> tuple[QueryMix, int | None, list[int]]:
    """(items per query, sequence length, batch grid) of a batched-inference zoo model, from its
    dataset (``traffic.DATASET_OF``, ``data/serving/datasets.yaml``): a dataset with ``pairs``
    aggregates user-item pairs per query (DLRM); one with ``seq_len`` gives each sample its mean
    sequence length (BERT); a model with neither has single-item queries (ResNet-50)."""
    name = DATASET_OF.get(model.partition(":")[0])  # "ranking-hc:940" serves like ranking-hc
    ds = datasets()[name] if name else {}
    if "pairs" in ds:
        return QueryMix.of(name), None, BATCH_GRID
    seq = ds.get("seq_len")
    return QueryMix.single(), int(round(float(seq["mean"]))) if seq else None, SAMPLE_GRID


@dataclass(frozen=True)
class PaddedAttention:
    """The keys each sequence's attention runs over when the attention kernel is compiled per
    sequence length (``data/mlperf/deployments.yaml`` ``attention_kernel_seq_lens``, NVIDIA's BERT):
    a sequence of L tokens costs L x S, S the smallest kernel length at or above the longest
    sequence of its batch. Sorted batches (Offline) hold similar lengths, so S is the kernel length
    of the mean. An unsorted batch (Server) of b samples holds a full-length one (``full_fraction``
    of the sample set) with probability 1 - (1 - full_fraction)**b; S is then the longest kernel
    length, else the mean's. The engine times attention at L x L; ``kv_len`` is what it should be."""

    seq_len: int
    kernel_lens: tuple[int, ...]
    full_fraction: float
    sorted_batches: bool

    def kv_len(self, batch: float) -> float:
        typical = next((s for s in self.kernel_lens if s >= self.seq_len), self.kernel_lens[-1])
        if self.sorted_batches:
            return float(typical)
        full = 1.0 - (1.0 - self.full_fraction) ** batch
        return full * self.kernel_lens[-1] + (1.0 - full) * typical


def padded_attention(model: str, kernel_lens: list[int] | None, sorted_batches: bool) -> PaddedAttention | None:
    """A zoo encoder's PaddedAttention under a deployment whose attention kernels are compiled for
    ``kernel_lens`` (None: kernels that skip padding, nothing to add), from its dataset's mean length
    and ``full_window_fraction`` (``data/serving/datasets.yaml``)."""
    name = DATASET_OF.get(model.partition(":")[0])
    seq = datasets()[name].get("seq_len") if name else None
    if not kernel_lens or not seq:
        return None
    full = seq.get("full_window_fraction", {}).get("value", 0.0)
    return PaddedAttention(int(round(float(seq["mean"]))), tuple(sorted(int(k) for k in kernel_lens)), float(full),
                           sorted_batches)


class RankingBatchCost:
    """Time of one batch on a group of ``shards`` chips. With one shard a chip holds the whole
    model. With more, tables are sharded (``system/embedding.py``) table-wise (the busiest chip's
    lookups, an all-to-all of pooled embeddings) or row-wise (1/shards of all lookups, a
    reduce-scatter of partial sums), then the dense part runs on B/shards samples per chip.
    ``grid`` is the batch sizes simulated (interpolated between); ``seq_len`` is passed to the
    workload (encoders); ``padding`` adds the attention a kernel compiled per sequence length
    spends on padded keys (``PaddedAttention``); ``stack`` is the GPU software stack whose kernels
    the gpu engine times (``data/calibration/gpu.yaml``; None: its default)."""

    def __init__(self, model: str, system: SystemSpec, options: CompileOptions, shards: int = 1,
                 grid: list[int] | None = None, seq_len: int | None = None, scheme: str = "table",
                 padding: PaddedAttention | None = None, stack: str | None = None):
        if scheme not in ("table", "row"):
            raise ValueError(f"embedding sharding scheme must be 'table' or 'row', got '{scheme}'")
        self.model, self.system, self.options, self.shards, self.scheme = model, system, options, shards, scheme
        self.grid = list(grid or BATCH_GRID)
        self.seq_len = seq_len
        self.padding = padding
        self.stack = stack

    def _latency_s(self, result, batch: int) -> float:
        """A simulated batch's time, with its attention stretched from L x L to L x S keys when the
        kernels pad (attention work is linear in the keys at a fixed query count)."""
        if self.padding is None:
            return result.latency_s
        attention_s = sum(o.time_s for o in result.ops if o.op == "attention")
        return result.latency_s + attention_s * (self.padding.kv_len(batch) / self.padding.seq_len - 1.0)

    def _tables(self, batch: int) -> tuple[list[int], list[int], int, str]:
        g, w = workload_graph(self.model, batch=batch)
        node = next((n for n in g.nodes if n.op == "tbe"), None)
        if node is None:
            raise ValueError(f"{self.model} has no table-batched embedding to shard")
        dim = g.tensors[node.inputs[1]].shape[1]
        return list(node.attrs["rows"]), list(node.attrs["pooling_factors"]), dim, w.default_dtype

    @cached_property
    def layout(self) -> TableShards:
        rows, pooling, dim, default = self._tables(self.grid[0])
        shard = shard_row_wise if self.scheme == "row" else shard_table_wise
        return shard(rows, pooling, dim * nbytes(self.options.dtype or default), self.shards)

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        chip = self.system.load_chip()
        s = self.shards
        grid = self.grid
        engine, engine_options = engine_for(chip, self.stack)  # GPUs: the gpu engine with the deployment's stack
        results = {b: simulate(self.model, chip=chip, batch=b, seq_len=self.seq_len, options=self.options,
                               engine=engine, engine_options=engine_options)
                   for b in sorted(set(grid) | {max(1, b // s) for b in grid})}
        r = results[grid[0]]
        per_chip = r.memory_required_bytes
        if s > 1:
            tables = self.layout
            per_chip += tables.max_bytes - sum(tables.bytes_per_chip)
        if per_chip > r.memory_capacity_bytes:
            raise DoesNotFit(
                f"{self.model} does not fit on {self.system.name} with tables sharded {self.scheme}-wise {s} ways: "
                f"{per_chip / 1e9:.1f} GB per chip needed > {r.memory_capacity_bytes / 1e9:.1f} GB on {chip.name}")
        times = []
        for b in grid:
            full = results[b]
            if s == 1:
                times.append(self._latency_s(full, b))
                continue
            _, _, dim, default = self._tables(grid[0])
            act = nbytes(activation_dtype(self.options.dtype or default))  # pooled embeddings travel as activations
            sparse = sum(o.time_s for o in full.ops if o.op == "tbe") * tables.lookup_share()
            part = results[max(1, b // s)]
            dense = self._latency_s(part, max(1, b // s)) - sum(o.time_s for o in part.ops if o.op == "tbe")
            exchange = reduce_scatter_s if tables.scheme == "row" else alltoall_s
            comm = exchange(chip, b * tables.exchanged_tables() * dim * act, s)
            times.append(sparse + comm + dense)
        # a chip's power running each batch (sharded: its share of the batch), for serving_cost
        self._power_w = [results[b if s == 1 else max(1, b // s)].power_w for b in grid]
        return np.array(grid, float), np.maximum.accumulate(np.array(times))

    def busy_power_w(self, pairs: float) -> float | None:
        """A chip's power while it runs a batch of ``pairs`` items (interpolated between the
        simulated batches; None when the chip's power is unknown)."""
        x, _ = self._grid
        powers = getattr(self, "_power_w", None)  # absent when the grid was set from elsewhere
        if powers is None or any(p is None for p in powers):
            return None
        return float(np.interp(pairs, x, np.array(powers, float)))

    def batch_s(self, pairs: int) -> float:
        x, y = self._grid
        if pairs <= x[-1]:
            return float(np.interp(pairs, x, y))
        return float(y[-1] * pairs / x[-1])

    def throughput_pairs_per_s(self, batch: int) -> float:
        """Items per second running full batches of ``batch`` items back to back (Offline: every
        query is there from the start, so the harness's batches are all full)."""
        return batch / self.batch_s(batch)


def plan_ranking(model: str, system: SystemSpec, options: CompileOptions,
                 padding: PaddedAttention | None = None, stack: str | None = None) -> RankingBatchCost:
    """The fewest embedding shards (a divisor of the chip count) with which every chip fits:
    table-wise first (less traffic), row-wise when a table is too large for table-wise.
    ``padding``, ``stack``: see RankingBatchCost."""
    last: DoesNotFit | None = None
    _, seq_len, grid = batch_workload(model)
    for s in [d for d in range(1, system.count + 1) if system.count % d == 0]:
        for scheme in ("table", "row") if s > 1 else ("table",):
            cost = RankingBatchCost(model, system, options, shards=s, grid=grid, seq_len=seq_len, scheme=scheme,
                                    padding=padding, stack=stack)
            try:
                cost.batch_s(grid[0])
                return cost
            except DoesNotFit as e:
                last = e
    assert last is not None
    raise last


@dataclass(frozen=True)
class RankingServingResult:
    qps: float
    queries: int
    samples_per_s: float  # completed queries / (last completion - first arrival)
    p99_latency_s: float
    p90_latency_s: float
    p50_latency_s: float
    mean_latency_s: float
    mean_batch_pairs: float



def serve_ranking(cost: RankingBatchCost, groups: int, qps: float, *, queries: int | None = None, batch_pairs: int,
                  timeout_s: float, seed: int = 0, mix: QueryMix | None = None, streams: int = 1,
                  min_batches: int = 400, bundles: int | None = None,
                  copy_s_per_item: float = 0.0, batch_overhead_s: float = 0.0,
                  max_batches: int | None = None) -> RankingServingResult:
    """Poisson queries at ``qps`` over ``groups`` chip groups (data-parallel replicas, each
    ``cost.shards`` chips) with dynamic batching.

    The groups are identical and take the queries in turn (round-robin), so one group is
    simulated: it receives every ``groups``-th query of the Poisson stream. It serves ``queries``
    queries, by default enough for ``min_batches`` full batches (at least 20,000, at most
    400,000): near saturation a queue grows slowly, and a run of a few dozen batches would pass
    loads that a 10-minute MLPerf run does not.

    Each group runs up to ``streams`` batches at once (NVIDIA's harnesses issue batches to
    several CUDA streams): the batches in flight share the chip equally (processor sharing), so a
    batch's time stretches with the number running beside it while the chip's throughput is
    unchanged. With one stream batches run back to back.

    ``bundles`` (default ``streams``) batches may be in flight at once, counting those formed and
    waiting for a stream (NVIDIA's DLRM-v2 harness: ``gpu_num_bundles`` sets of device buffers, so
    the next batch is formed and copied while one runs): the batcher forms a batch whenever fewer
    are in flight. A formed batch first copies its inputs to the chip, ``copy_s_per_item`` seconds
    per item on one copy engine shared by the group's batches in turn (0: the inputs start on the
    device), then waits for a free stream, first come first served. Each batch holds its stream
    ``batch_overhead_s`` longer than the engine's kernels take (a harness's per-batch work on the
    stream: synchronisation, results, completions).

    ``max_batches`` ends the run once that many batches have been formed (the queries batched by
    then are the run): a light load forms many small batches, and its stable queue needs far
    fewer of them than a load near the knee, whose batches are full, needs queries."""
    if streams < 1:
        raise ValueError(f"streams must be >= 1, got {streams}")
    bundles = streams if bundles is None else bundles
    if bundles < streams:
        raise ValueError(f"bundles ({bundles}) must be at least streams ({streams}): every running batch holds one")
    if copy_s_per_item < 0 or batch_overhead_s < 0:
        raise ValueError(f"copy_s_per_item and batch_overhead_s must be >= 0, got {copy_s_per_item}, "
                         f"{batch_overhead_s}")
    mix = mix or QueryMix.mlperf()
    per_batch = max(1.0, batch_pairs / mix.mean)
    queries = queries or int(min(max(20_000, min_batches * per_batch), 400_000))
    rng = np.random.default_rng(seed)
    # the group's share of a Poisson stream dealt round-robin: its first arrival, then every
    # groups-th, i.e. gaps that are sums of `groups` exponential gaps (Erlang), drawn as such
    gaps = rng.gamma(groups, 1.0 / qps, queries)
    gaps[0] = rng.exponential(1.0 / qps)
    arrivals = np.cumsum(gaps)
    pairs = mix.draw(queries, rng)
    latencies = np.empty(queries)
    batches: list[int] = []
    queries = _serve_group(arrivals, pairs, cost, batch_pairs, timeout_s, streams, latencies, batches,
                           bundles=bundles, copy_s_per_item=copy_s_per_item, batch_overhead_s=batch_overhead_s,
                           max_batches=max_batches)
    arrivals, latencies = arrivals[:queries], latencies[:queries]
    finish = float(np.max(arrivals + latencies))
    # latency percentiles over the second half of the run: past warm-up, and where an overloaded
    # system's growing backlog shows
    steady = latencies[queries // 2:]
    rate = queries / (finish - arrivals[0] + groups / qps)  # one group's completions per second
    return RankingServingResult(qps=qps, queries=queries, samples_per_s=rate * groups,
                                p99_latency_s=float(np.percentile(steady, 99)),
                                p50_latency_s=float(np.percentile(steady, 50)),
                                mean_batch_pairs=float(np.mean(batches)), mean_latency_s=float(np.mean(steady)),
                                p90_latency_s=float(np.percentile(steady, 90)))


def _serve_group(arrivals: np.ndarray, pairs: np.ndarray, cost, batch_pairs: int, timeout_s: float, streams: int,
                 latencies: np.ndarray, batches: list[int], *, bundles: int | None = None,
                 copy_s_per_item: float = 0.0, batch_overhead_s: float = 0.0,
                 max_batches: int | None = None) -> int:
    """One chip group's batcher, its copy engine and its ``streams`` (see ``serve_ranking``) over
    queries in arrival order; writes ``latencies`` and appends each batch's items to ``batches``.
    Returns the queries served: all, or those batched in the first ``max_batches`` batches.

    Queries are served first come first served, so the queue is always the index range
    [head, k) of the arrivals: a batch is found by bisection on the arrival times and on the
    running sum of items, and its queries' latencies are written as one slice when it ends. The
    work per batch does not grow with its queries, so a probe of millions of queries (a 600 s
    MLPerf run) takes seconds."""
    bundles = streams if bundles is None else bundles
    n = len(arrivals)
    times = arrivals.tolist()  # Python floats: bisect on a list is faster than numpy per call
    cum = [0, *np.cumsum(pairs, dtype=np.int64).tolist()]  # items of queries [0, i)
    head, k = 0, 0  # queries [head, k) have arrived and wait for a batch; [0, head) are batched
    active: list[list] = []  # [remaining solo seconds, first query, end query] of the batches running
    waiting: deque[tuple[float, float, int, int]] = deque()  # (inputs on chip at, solo s, first, end), FIFO
    copy_free = 0.0  # when the copy engine finishes the inputs it has been given
    now = 0.0
    solo_s: dict[int, float] = {}  # the engine's time of a batch of so many items, memoised

    def finish(a: list) -> None:
        latencies[a[1]:a[2]] = now - arrivals[a[1]:a[2]]

    def next_event() -> float:
        """When the next running batch ends or the next waiting one can start."""
        done = now + min(a[0] for a in active) * len(active) if active else math.inf
        ready = max(now, waiting[0][0]) if waiting and len(active) < streams else math.inf
        return min(done, ready)

    def advance(until: float) -> None:
        """Run the batches in flight (processor sharing) up to ``until``: complete those that end,
        start waiting ones as streams free up and their inputs are on the chip."""
        nonlocal now
        while True:
            while waiting and len(active) < streams and waiting[0][0] <= now:
                _, solo, first, end = waiting.popleft()
                active.append([solo, first, end])
            m = len(active)
            least = min(a[0] for a in active) if active else 0.0
            done = now + least * m if active else math.inf
            ready = max(now, waiting[0][0]) if waiting and m < streams else math.inf
            if min(done, ready) > until:
                for a in active:
                    a[0] -= (until - now) / m
                break
            if done <= ready:  # a running batch ends first: its share of work, exactly
                now = done
                for a in active:
                    a[0] -= least
                for a in [a for a in active if a[0] <= 0.0]:
                    finish(a)
                    active.remove(a)
            else:  # a waiting batch's inputs arrive while a stream is free
                for a in active:
                    a[0] -= (ready - now) / m
                now = ready
        now = max(now, until)

    if max_batches is not None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    while (k < n or head < k) and (max_batches is None or len(batches) < max_batches) or active or waiting:
        if len(active) + len(waiting) >= bundles or (head == k and k >= n) or len(batches) == max_batches:
            advance(next_event())  # wait for a bundle to free up
            continue
        if head == k:
            k += 1
        # a bundle is free: the batch opens when a query waits; it closes when the queued items
        # reach the target or the oldest query has waited the timeout. Queries join while fewer
        # than batch_pairs items wait and they arrived by the deadline.
        t0 = max(now, times[head])
        deadline = max(t0, times[head] + timeout_s)
        if cum[k] - cum[head] < batch_pairs:
            by_time = bisect_right(times, deadline, k)
            by_items = bisect_left(cum, cum[head] + batch_pairs, k + 1)  # the first k' holding enough
            k = min(by_time, by_items, n)
        start = deadline if cum[k] - cum[head] < batch_pairs else max(t0, times[k - 1])
        # the batch takes the oldest queries whose items fit (at least one)
        end = max(head + 1, min(k, bisect_right(cum, cum[head] + batch_pairs, head + 1) - 1))
        total = cum[end] - cum[head]
        advance(start)
        copy_free = max(start, copy_free) + total * copy_s_per_item
        if total not in solo_s:
            solo_s[total] = cost.batch_s(total) + batch_overhead_s
        waiting.append((copy_free, solo_s[total], head, end))
        batches.append(total)
        head = end
    return head
