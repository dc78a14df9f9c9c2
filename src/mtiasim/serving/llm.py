"""Continuous batching of LLM requests over time (vLLM / TensorRT-LLM in-flight batching).

Each data-parallel replica runs an independent loop: admit waiting requests while the batch and
the paged KV cache allow it, build a step from one token per decoding sequence plus prefill
chunks up to the step's token budget (chunked prefill), take the step's time from the cost
model, advance the clock. A decoding sequence that needs a new KV block when none is free
preempts the most recently admitted sequence, which is recomputed later (vLLM's recompute
preemption). With ``mixed_steps`` off (vLLM V0's default scheduler: it prioritises prefills and
does not batch prefill and decode together) a step that has prompts to prefill runs only them, with
the whole token budget and whole prompts (its chunked prefill was off by default), and the
decodes wait. Admission leaves ``kv_watermark_fraction`` of the blocks free (vLLM's block
manager: a prompt is admitted only if ``free - needed >= watermark``), so the running sequences'
next tokens find blocks: without it the loop admits prompts into the last free blocks, the next
decode step preempts them again, and their prefill is wasted, step after step. Requests are
routed to replicas round-robin (``route_round_robin``, each replica simulated alone) or each to the
replica with the fewest requests in flight (``run_least_pending``, the replicas simulated together:
the loop is a generator a driver feeds arrivals to between steps).

Beam search (``beams`` > 1, as MLPerf GPT-J mandates 4 beams) decodes every beam of a request in
the step (the step's decode batch counts beams); the prompt's KV blocks are shared by the beams
(paged KV cache), each beam holds and reads its own generated tokens. The attention kernel reads
the prompt once per beam (TensorRT-LLM's masked MHA follows each beam's ``cache_indirection``):
the first read comes from memory, the other beams' reads, made at the same time, from the on-chip
cache (``StepShape.decode_repeat_tokens``).
``max_num_seqs`` counts requests, as TensorRT-LLM's max batch size does with a beam width.

``batching="static"`` is the runtime before in-flight batching (TensorRT-LLM's 2023
``GenerationSession.decode`` in ``tensorrt_llm/runtime/generation.py``, which NVIDIA's MLPerf
v3.1 GPT-J harness ran): a batch is admitted only when the previous one has finished; it is a
fixed tensor of ``batch x beams`` rows, so a request that has finished keeps its rows in every
step until the batch's last one ends (the loop stops only when every row is done); after the
context step each prompt's KV cache is tiled into every beam (``_tile_beam_width`` on
``present_key_value``), and every row attends over the batch's longest prompt plus the steps so
far; the batch's outputs are returned together (``gather_tree`` at the end), so its requests
complete when it does. With ``sort_prompts`` a new batch takes the longest queued prompts first
(the harness sorts the samples it holds by length, ``enable_sort``), so an Offline batch, drawn
from a queue that holds every sample, pads little. KV memory is still accounted in paged blocks
(the 2023 runtime reserved each row's maximum length up front), so where the cache is tight a
static batch here holds more requests than it did.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from mtiasim.serving.cost import LLMStepCost, StepShape
from mtiasim.serving.traffic import Request


@dataclass(frozen=True)
class SchedulerConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 4096
    block_tokens: int = 16
    chunked_prefill: bool = True
    beams: int = 1  # beam width of beam-search decoding
    batching: str = "continuous"  # or "static": a new batch starts when the previous one has finished
    sort_prompts: bool = False  # static batching: each batch takes the longest queued prompts first
    kv_watermark_fraction: float = 0.0  # admission leaves this share of the KV blocks free
    mixed_steps: bool = True  # False: a step with prompts to prefill runs only them (vLLM V0's default)
    # chunked prefill: at most this many of one prompt's tokens per step (vLLM's
    # --long-prefill-token-threshold; 0: no cap beyond the step's token budget)
    max_prefill_chunk_tokens: int = 0

    def __post_init__(self) -> None:
        for f in ("max_num_seqs", "max_num_batched_tokens", "block_tokens", "beams"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be >= 1, got {getattr(self, f)}")
        if self.max_prefill_chunk_tokens < 0:
            raise ValueError(f"max_prefill_chunk_tokens must be >= 0 (0: no cap), got {self.max_prefill_chunk_tokens}")
        if self.max_prefill_chunk_tokens and not (self.chunked_prefill and self.mixed_steps):
            raise ValueError("max_prefill_chunk_tokens caps the chunks of chunked prefill in mixed steps; it does not "
                             "apply with chunked_prefill or mixed_steps off (--prefill-first)")
        if not 0.0 <= self.kv_watermark_fraction < 1.0:
            raise ValueError(f"kv_watermark_fraction must be in [0, 1), got {self.kv_watermark_fraction}")
        if self.batching not in ("continuous", "static"):
            raise ValueError(f"batching must be 'continuous' or 'static', got '{self.batching}'")


@dataclass
class RequestRecord:
    request: Request
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0
    rejected: str | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.request.start_s

    @property
    def tpot_s(self) -> float | None:
        n = self.request.output_tokens
        if self.finish_s is None or self.first_token_s is None or n < 2:
            return None
        return (self.finish_s - self.first_token_s) / (n - 1)

    @property
    def e2e_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.request.start_s


@dataclass
class _Seq:
    rec: RequestRecord
    prefill_target: int  # tokens to (re)compute before decoding
    prompt: int = 0  # the request's prompt tokens (kept here: read for every sequence at every step)
    done: int = 0  # prefilled tokens
    generated: int = 0
    blocks: int = 0
    active: bool = False  # in the running batch
    # bookkeeping of _continuous_loop (unused by _general_loop): admission ticket (its order is
    # the running batch's), whether the sequence decodes, the loop's decode-step count when
    # ``generated`` was last brought up to date, and a version that retires its queued events
    ticket: int = 0
    decoding: bool = False
    synced_at: int = 0
    version: int = 0

    @property
    def context(self) -> int:
        return self.prompt + self.generated


@dataclass
class ReplicaStats:
    steps: int = 0
    busy_s: float = 0.0
    preemptions: int = 0
    max_batch_seen: int = 0
    finished: int = 0  # requests completed so far


def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block)


def _take_arrivals(reqs: list[Request], records: list[RequestRecord], i: int, now: float,
                   waiting: deque[_Seq]) -> int:
    """Queue the requests from index ``i`` on that have arrived by ``now``; the next index."""
    n = len(reqs)
    while i < n and reqs[i].arrival_s <= now:
        waiting.append(_Seq(records[i], reqs[i].prompt_tokens, reqs[i].prompt_tokens))
        i += 1
    return i


def _admission_blocks(s: _Seq, free: int, total_blocks: int, watermark: int, cfg: SchedulerConfig,
                      kv_tokens: int) -> int | None:
    """KV blocks the head of the queue takes if admitted now; 0 when it has to wait for blocks;
    None when no cache state can ever admit it (vLLM: AllocStatus.NEVER): its record is rejected."""
    need = _blocks(s.prefill_target + 1, cfg.block_tokens)
    if need > total_blocks - watermark:
        s.rec.rejected = (f"needs {need * cfg.block_tokens} KV tokens, replica holds {kv_tokens}"
                          + (f" ({watermark * cfg.block_tokens} kept free by the admission watermark)"
                             if watermark else ""))
        return None
    return need if need <= free - watermark else 0


def _prefill_chunks(prefilling, budget: int, decodes: bool, cfg: SchedulerConfig) -> list[tuple[_Seq, int]]:
    """The step's prefill work: (sequence, tokens) for the ``prefilling`` sequences in admission
    order, within the step's token ``budget``; ``decodes``: the step has decoding sequences."""
    whole = not (cfg.chunked_prefill and cfg.mixed_steps)  # prefill-first steps hold whole prompts only
    cap = cfg.max_prefill_chunk_tokens if not whole and cfg.max_prefill_chunk_tokens else None
    chunks: list[tuple[_Seq, int]] = []
    for s in prefilling:
        if budget <= 0:
            break
        left = s.prefill_target - s.done
        if whole and left > budget and (chunks or (decodes and cfg.mixed_steps)):
            break
        take = left if whole else min(left, budget, cap or left)
        chunks.append((s, take))
        budget -= take
    return chunks


def run_replica(requests: list[Request], cost: LLMStepCost, kv_tokens: int, cfg: SchedulerConfig
                ) -> tuple[list[RequestRecord], ReplicaStats, float]:
    """Simulate one replica; returns per-request records, stats and the time the last request ended."""
    reqs = sorted(requests, key=lambda r: (r.arrival_s, r.id))
    records = [RequestRecord(r) for r in reqs]
    stats = ReplicaStats()
    return records, stats, _finish(_replica_loop(reqs, records, cost, kv_tokens, cfg, stats))


def _finish(loop) -> float:
    """Run a replica loop to its end with no more arrivals: its remaining steps, then, where it
    waits for an arrival (yields None), ``next`` sends it None, which it reads as "none will come":
    it rejects what it cannot serve and returns its clock."""
    while True:
        try:
            next(loop)
        except StopIteration as stop:
            return stop.value


def _replica_loop(reqs: list[Request], records: list[RequestRecord], cost: LLMStepCost, kv_tokens: int,
                  cfg: SchedulerConfig, stats: ReplicaStats):
    """The scheduling loop of one replica, as a generator: it yields its clock after every step.
    ``reqs`` (in arrival order) and ``records`` (one per request, same order) may grow while it
    runs: a driver that routes arrivals appends to both. When it can do nothing with the requests
    it holds (idle, or blocked on KV blocks) it yields None; the driver then sends True after
    appending another arrival, or False (or None: ``next``) when there will be none: the loop then
    rejects what is still waiting and returns its clock. Continuous batching without beams runs
    ``_continuous_loop`` (the same steps and records, with per-step work that does not grow with
    the batch), everything else ``_general_loop``."""
    if cfg.beams == 1 and cfg.batching == "continuous":
        return (yield from _continuous_loop(reqs, records, cost, kv_tokens, cfg, stats))
    return (yield from _general_loop(reqs, records, cost, kv_tokens, cfg, stats))


def _general_loop(reqs: list[Request], records: list[RequestRecord], cost: LLMStepCost, kv_tokens: int,
                  cfg: SchedulerConfig, stats: ReplicaStats):
    """``_replica_loop`` for every scheduler: each step rebuilds its decode batch, checks every
    decoding sequence's next KV block and advances every sequence one by one."""
    total_blocks = kv_tokens // cfg.block_tokens
    free = total_blocks
    watermark = int(cfg.kv_watermark_fraction * total_blocks)  # blocks admission leaves free
    waiting: deque[_Seq] = deque()
    running: list[_Seq] = []
    now, i = 0.0, 0
    static = cfg.batching == "static"
    batch: list[_Seq] = []  # static batching: every request of the running batch, finished ones included
    batch_steps = 0  # static batching: decode steps the batch has run
    batch_prompt = 0  # static batching: the batch's longest prompt, which every row is padded to

    def release(s: _Seq) -> None:
        nonlocal free
        free += s.blocks
        s.blocks = 0

    while True:
        n = len(reqs)
        i = _take_arrivals(reqs, records, i, now, waiting)
        if not waiting and not running:
            if i < n:
                now = reqs[i].arrival_s
                continue
            if not (yield None):  # idle until another arrival
                return now
            continue
        # admission (FIFO): the prompt's KV blocks must be free; static batching admits a new
        # batch only once the running one has finished
        admit = not static or not running
        if static and admit:
            batch, batch_steps, batch_prompt = [], 0, 0
            if cfg.sort_prompts:  # batches of like lengths pad less (all queued at once: Offline)
                waiting = deque(sorted(waiting, key=lambda q: -q.rec.request.prompt_tokens))
        while admit and waiting and len(running) < cfg.max_num_seqs:
            s = waiting[0]
            need = _admission_blocks(s, free, total_blocks, watermark, cfg, kv_tokens)
            if need is None:  # rejected
                waiting.popleft()
                continue
            if not need:
                break
            waiting.popleft()
            free -= need
            s.blocks, s.active = need, True
            running.append(s)  # running stays in admission order
            if static:
                batch.append(s)
                batch_prompt = max(batch_prompt, s.rec.request.prompt_tokens)
        # decoding sequences need a block for the token they are about to write (every beam)
        decode = [s for s in running if s.done >= s.prefill_target]
        bt = cfg.block_tokens
        preempted = False
        for s in decode:
            if not s.active:
                continue
            if cfg.beams == 1 and s.prompt + s.generated + 1 <= s.blocks * bt:
                continue  # the block the next token goes to is already held (need <= 0 below)
            need = (_blocks(s.context + 1, cfg.block_tokens)
                    + (cfg.beams - 1) * _blocks(s.generated + 1, cfg.block_tokens) - s.blocks)
            while need > free and s.active:
                victim = running.pop()  # the most recently admitted sequence
                release(victim)
                victim.active = False
                victim.prefill_target, victim.done = victim.context, 0
                victim.rec.preemptions += 1
                stats.preemptions += 1
                waiting.appendleft(victim)
                preempted = True
            if s.active and need > 0:
                free -= need
                s.blocks += need
        if preempted:  # the victims leave the decode batch
            decode = [s for s in running if s.done >= s.prefill_target]
        # prefill-first steps: the decodes' tokens do not take the budget
        budget = cfg.max_num_batched_tokens - (len(decode) if cfg.mixed_steps else 0)
        chunks = _prefill_chunks((s for s in running if s.done < s.prefill_target), budget, bool(decode), cfg)
        if chunks and not cfg.mixed_steps:
            decode = []  # vLLM V0's default scheduler: a step with prompts to prefill runs only them
        if not decode and not chunks:  # nothing schedulable (all blocked): wait for the next arrival
            if i < n:
                now = max(now, reqs[i].arrival_s)
                continue
            if (yield None):  # another arrival may unblock it
                continue
            for s in list(waiting):  # cannot ever be served
                s.rec.rejected = s.rec.rejected or "KV cache too small for this request"
            return now
        # KV read per decode step: the beams of a request share their prompt's blocks (paged KV
        # cache) and each beam reads its own generated tokens. The attention kernel reads every
        # beam's path (TensorRT-LLM's masked MHA follows cache_indirection per beam), so the
        # prompt is read once per beam: the first read comes from memory, the other beams' reads,
        # at the same time, from the on-chip cache (decode_repeat_tokens)
        if static and decode:
            # every row of the batch runs (finished requests' rows too), over the tiled prompt KV:
            # the batch's longest prompt plus the tokens generated so far, per beam
            width = batch_prompt + batch_steps + 1
            rows = cfg.beams * (len(decode) + sum(1 for b in batch if b.rec.finish_s is not None))
            shape = StepShape(tuple((t, s.done) for s, t in chunks), rows * width, rows)
            batch_steps += 1
        else:
            if cfg.beams == 1:
                kv_read, repeats = sum(s.prompt + s.generated for s in decode), 0
            else:
                kv_read = sum(s.context + (cfg.beams - 1) * s.generated for s in decode)
                repeats = (cfg.beams - 1) * sum(s.prompt for s in decode)
            shape = StepShape(tuple((t, s.done) for s, t in chunks), kv_read, cfg.beams * len(decode), repeats)
        dt = cost.step_s(shape)
        now += dt
        stats.steps += 1
        stats.busy_s += dt
        stats.max_batch_seen = max(stats.max_batch_seen, len(decode) + len(chunks))
        finished = []
        for s in decode:
            s.generated += 1
            if s.generated >= s.rec.request.output_tokens:
                finished.append(s)
        for s, t in chunks:
            s.done += t
            if s.done >= s.prefill_target:
                s.generated += 1
                if s.rec.first_token_s is None:
                    s.rec.first_token_s = now
                if s.generated >= s.rec.request.output_tokens:
                    finished.append(s)
        if finished:
            stats.finished += len(finished)
            for s in finished:
                s.rec.finish_s = now
                s.active = False
                release(s)
            running = [s for s in running if s.active]
            if static and not running:  # the batch's outputs are returned together
                for b in batch:
                    if b.rec.finish_s is not None:  # not a preempted one, which is queued again
                        b.rec.finish_s = now
        yield now


def _continuous_loop(reqs: list[Request], records: list[RequestRecord], cost: LLMStepCost, kv_tokens: int,
                     cfg: SchedulerConfig, stats: ReplicaStats):
    """``_general_loop`` for continuous batching without beams (every LLM Server and Offline run of
    the calibration set but GPT-J's), step for step the same: the same admissions, preemptions,
    steps, clock and records, where that loop rebuilds its decode batch and walks every sequence at
    every step. Every decoding sequence gains one token per decode step, so a sequence's
    ``generated`` is kept as of the step count ``synced_at`` and brought up to date only when read;
    the steps at which it next needs a KV block and at which its output is complete are known when
    it starts decoding, and wait in two heaps; the decoding sequences' KV read is kept as a running
    sum. The running batch is a dict in admission order (``popitem`` takes the most recently
    admitted sequence, the preemption victim), the prefilling sequences a list in the same order."""
    bt = cfg.block_tokens
    total_blocks = kv_tokens // bt
    free = total_blocks
    watermark = int(cfg.kv_watermark_fraction * total_blocks)  # blocks admission leaves free
    waiting: deque[_Seq] = deque()
    running: dict[int, _Seq] = {}  # ticket -> sequence, in admission order
    prefilling: list[_Seq] = []  # running sequences still (re)computing their context, same order
    n_decode = 0  # running sequences that decode
    kv_base = 0  # sum over them of prompt + generated - synced_at: their KV read is kv_base + n_decode x steps
    steps = 0  # decode steps run: every decoding sequence gains a token in each
    block_due: list[tuple[int, int, int, _Seq]] = []  # (step count at which it needs a block, ticket, version, seq)
    output_due: list[tuple[int, int, int, _Seq]] = []  # (step count at which its output is complete, ...)
    tickets = 0
    now, i = 0.0, 0

    def sync(s: _Seq) -> None:
        s.generated += steps - s.synced_at
        s.synced_at = steps

    def push_block_due(s: _Seq) -> None:
        # its next token needs a block once prompt + generated + 1 > blocks x bt
        heapq.heappush(block_due, (s.blocks * bt - s.prompt - s.generated + s.synced_at, s.ticket, s.version, s))

    def start_decoding(s: _Seq) -> None:
        nonlocal n_decode, kv_base
        s.decoding, s.synced_at = True, steps
        n_decode += 1
        kv_base += s.prompt + s.generated - steps
        push_block_due(s)
        heapq.heappush(output_due, (s.rec.request.output_tokens - s.generated + steps, s.ticket, s.version, s))

    def stop_decoding(s: _Seq) -> None:
        nonlocal n_decode, kv_base
        sync(s)
        kv_base -= s.prompt + s.generated - s.synced_at
        n_decode -= 1
        s.decoding = False
        s.version += 1  # its queued events no longer apply

    while True:
        n = len(reqs)
        i = _take_arrivals(reqs, records, i, now, waiting)
        if not waiting and not running:
            if i < n:
                now = reqs[i].arrival_s
                continue
            if not (yield None):  # idle until another arrival
                return now
            continue
        # admission (FIFO): the prompt's KV blocks must be free
        while waiting and len(running) < cfg.max_num_seqs:
            s = waiting[0]
            need = _admission_blocks(s, free, total_blocks, watermark, cfg, kv_tokens)
            if need is None:  # rejected
                waiting.popleft()
                continue
            if not need:
                break
            waiting.popleft()
            free -= need
            s.blocks, s.active = need, True
            tickets += 1
            s.ticket = tickets
            running[tickets] = s
            prefilling.append(s)
        # decoding sequences whose next token needs a block, in admission order
        due: list[_Seq] = []
        while block_due and block_due[0][0] <= steps:
            _, _, version, s = heapq.heappop(block_due)
            if s.decoding and s.version == version:
                due.append(s)
        due.sort(key=lambda q: q.ticket)
        for s in due:
            if not s.active:
                continue
            sync(s)
            need = _blocks(s.context + 1, bt) - s.blocks
            while need > free and s.active:
                _, victim = running.popitem()  # the most recently admitted sequence
                free += victim.blocks
                victim.blocks = 0
                victim.active = False
                if victim.decoding:
                    stop_decoding(victim)
                else:
                    prefilling.pop()  # the last of the running batch is the last prefilling one
                victim.prefill_target, victim.done = victim.context, 0
                victim.rec.preemptions += 1
                stats.preemptions += 1
                waiting.appendleft(victim)
            if s.active:
                free -= need
                s.blocks += need
                push_block_due(s)
        # prefill-first steps: the decodes' tokens do not take the budget
        budget = cfg.max_num_batched_tokens - (n_decode if cfg.mixed_steps else 0)
        chunks = _prefill_chunks(prefilling, budget, n_decode > 0, cfg)
        # vLLM V0's default scheduler: a step with prompts to prefill runs only them
        decoding = 0 if chunks and not cfg.mixed_steps else n_decode
        if not n_decode and not chunks:  # nothing schedulable (all blocked): wait for the next arrival
            if i < n:
                now = max(now, reqs[i].arrival_s)
                continue
            if (yield None):  # another arrival may unblock it
                continue
            for s in list(waiting):  # cannot ever be served
                s.rec.rejected = s.rec.rejected or "KV cache too small for this request"
            return now
        kv_read = kv_base + n_decode * steps if decoding else 0
        dt = cost.step_s(StepShape(tuple((t, s.done) for s, t in chunks), kv_read, decoding, 0))
        now += dt
        stats.steps += 1
        stats.busy_s += dt
        stats.max_batch_seen = max(stats.max_batch_seen, decoding + len(chunks))
        finished: list[_Seq] = []
        if decoding:
            steps += 1
            while output_due and output_due[0][0] <= steps:
                _, _, version, s = heapq.heappop(output_due)
                if s.decoding and s.version == version:
                    finished.append(s)
        started: list[_Seq] = []
        for s, t in chunks:
            s.done += t
            if s.done >= s.prefill_target:
                s.generated += 1
                if s.rec.first_token_s is None:
                    s.rec.first_token_s = now
                (finished if s.generated >= s.rec.request.output_tokens else started).append(s)
        if started or finished:
            prefilling = [s for s in prefilling if s.done < s.prefill_target]
        for s in started:
            start_decoding(s)
        if finished:
            stats.finished += len(finished)
            for s in finished:
                s.rec.finish_s = now
                if s.decoding:
                    stop_decoding(s)
                s.active = False
                free += s.blocks
                s.blocks = 0
                del running[s.ticket]
        yield now


def route_batches_round_robin(batches: list[list[Request]], replicas: int) -> list[list[Request]]:
    """Whole batches (a harness batcher's, harness_batches) to ``replicas`` engines in turn."""
    out: list[list[Request]] = [[] for _ in range(replicas)]
    for k, b in enumerate(batches):
        out[k % replicas].extend(b)
    return out


def route_round_robin(requests: list[Request], replicas: int) -> list[list[Request]]:
    out: list[list[Request]] = [[] for _ in range(replicas)]
    for k, r in enumerate(sorted(requests, key=lambda r: (r.arrival_s, r.id))):
        out[k % replicas].append(r)
    return out


class _Engine:
    """One engine of ``run_least_pending``: its scheduling loop, the requests sent to it and its clock."""

    __slots__ = ("loop", "reqs", "records", "stats", "clock", "idle", "done_before_step")

    def __init__(self, cost: LLMStepCost, kv_tokens: int, cfg: SchedulerConfig) -> None:
        self.reqs: list[Request] = []
        self.records: list[RequestRecord] = []
        self.stats = ReplicaStats()
        self.loop = _replica_loop(self.reqs, self.records, cost, kv_tokens, cfg, self.stats)
        next(self.loop)  # holding no request, it waits (yields None) for the first
        self.clock, self.idle, self.done_before_step = 0.0, True, 0

    def _went(self, t: float | None) -> None:
        if t is None:
            self.idle = True
        else:
            self.clock = t

    def run_until(self, t: float) -> None:
        """Run steps until one ends after ``t`` (or there is nothing to run)."""
        while not self.idle and self.clock < t:
            self.done_before_step = self.stats.finished
            self._went(next(self.loop))

    def in_flight(self, t: float) -> int:
        """Requests sent and not completed at ``t``: a step that ends after ``t`` has not completed its own yet."""
        return len(self.reqs) - (self.stats.finished if self.clock <= t else self.done_before_step)

    def send(self, r: Request) -> None:
        self.reqs.append(r)
        self.records.append(RequestRecord(r))
        if self.idle:  # resume it with its new arrival
            self.idle = False
            self.done_before_step = self.stats.finished
            self._went(self.loop.send(True))


def run_least_pending(requests: list[Request], cost: LLMStepCost, kv_tokens: int, cfg: SchedulerConfig,
                      replicas: int) -> list[tuple[list[RequestRecord], ReplicaStats, float]]:
    """Serve ``requests`` on ``replicas`` engines simulated together, each arrival going to the
    engine with the fewest requests in flight (sent and not yet completed; ties to the lowest
    index): NVIDIA's MLPerf LLM harness in Server runs (its LLMServerLoadGen's load-balancing
    traffic distribution, the default; data/mlperf/deployments.yaml ``server_routing``). Engines
    run their steps independently; at each arrival every engine is first run up to it. Returns
    ``run_replica``'s result for each engine."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    engines = [_Engine(cost, kv_tokens, cfg) for _ in range(replicas)]
    for r in sorted(requests, key=lambda r: (r.arrival_s, r.id)):
        t = r.arrival_s
        for e in engines:
            e.run_until(t)
        min(engines, key=lambda e: e.in_flight(t)).send(r)
    return [(e.records, e.stats, _finish(e.loop)) for e in engines]
