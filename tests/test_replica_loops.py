"""The two scheduling loops of a replica (serving/llm.py): ``_continuous_loop``, which keeps its
per-step work independent of the batch, must run step for step what ``_general_loop`` runs for
continuous batching without beams: the same step shapes, clock, records and stats, preemptions
included."""

import pytest

from mtiasim.serving.llm import (
    ReplicaStats,
    RequestRecord,
    SchedulerConfig,
    _continuous_loop,
    _finish,
    _general_loop,
    _replica_loop,
)
from mtiasim.serving.traffic import generate


class ShapedStep:
    """A step whose time depends on everything in its shape (so a shape that differs moves the
    clock), recording every shape it is asked for."""

    def __init__(self):
        self.shapes = []

    def step_s(self, shape):
        self.shapes.append(shape)
        prefill = sum(q * (1 + 1e-3 * before) for q, before in shape.prefill)
        return 2e-3 + 4e-5 * shape.decode_count + 1e-7 * shape.decode_contexts_sum + 3e-5 * prefill


def _run(loop_fn, reqs, kv_tokens, cfg):
    reqs = sorted(reqs, key=lambda r: (r.arrival_s, r.id))
    records = [RequestRecord(r) for r in reqs]
    stats, cost = ReplicaStats(), ShapedStep()
    end = _finish(loop_fn(reqs, records, cost, kv_tokens, cfg, stats))
    rows = [(r.request.id, r.first_token_s, r.finish_s, r.preemptions, r.rejected) for r in records]
    return rows, vars(stats), end, cost.shapes


CASES = {
    # a KV cache far too small for the load: decoding sequences preempt the latest admitted, often
    "preempting": (SchedulerConfig(max_num_seqs=128, max_num_batched_tokens=1024), 6_000, 40.0),
    "preempting, watermark": (SchedulerConfig(max_num_seqs=128, max_num_batched_tokens=1024,
                                              kv_watermark_fraction=0.01), 8_000, 40.0),
    # vLLM V0's default: prefill-only steps with whole prompts, decodes wait
    "prefill-first": (SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=2048, mixed_steps=False,
                                      chunked_prefill=False), 10_000, 30.0),
    # a per-prompt chunk cap and a batch cap that binds
    "chunk cap": (SchedulerConfig(max_num_seqs=16, max_num_batched_tokens=512, max_prefill_chunk_tokens=96),
                  200_000, 20.0),
    # a prompt longer than the whole cache is rejected by both
    "rejecting": (SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=4096), 1_000, 10.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_continuous_loop_runs_the_general_loops_steps(case):
    cfg, kv_tokens, qps = CASES[case]
    reqs = generate(400, qps, dataset="openorca", seed=13)
    fast = _run(_continuous_loop, reqs, kv_tokens, cfg)
    slow = _run(_general_loop, reqs, kv_tokens, cfg)
    assert fast[3] == slow[3]  # every step's shape, in order
    assert fast[:3] == slow[:3]  # records, stats, final clock
    stats = fast[1]
    if case.startswith("preempting") or case == "prefill-first":
        assert stats["preemptions"] > 0  # the case exercises preemption
    if case == "rejecting":
        assert any(row[4] for row in fast[0])


@pytest.mark.parametrize("cfg, expected", [(SchedulerConfig(), "_continuous_loop"),
                                           (SchedulerConfig(beams=4), "_general_loop"),
                                           (SchedulerConfig(batching="static"), "_general_loop")])
def test_replica_loop_picks_the_continuous_loop_only_where_it_applies(cfg, expected, monkeypatch):
    import mtiasim.serving.llm as llm

    calls = []
    for name in ("_continuous_loop", "_general_loop"):
        def spy(*a, _fn=getattr(llm, name), _name=name):
            calls.append(_name)
            return (yield from _fn(*a))
        monkeypatch.setattr(llm, name, spy)
    reqs = generate(50, 5.0, seed=2)
    _finish(_replica_loop(reqs, [RequestRecord(r) for r in reqs], ShapedStep(), 50_000, cfg, ReplicaStats()))
    assert calls == [expected]
