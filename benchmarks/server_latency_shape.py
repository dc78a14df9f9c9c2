"""The whole latency distribution of MLPerf Server runs, measured against the model's.

The calibration CSV keeps one p99 per Server submission; the submissions' own LoadGen logs print
the mean and the 50th/90th/99th percentiles too (``data/calibration/measured/mlperf_logs/
server_latency.yaml``, with their sources). A p99 alone does not say whether a system ran at its
knee with full batches (a narrow distribution near the bound) or far from it with a long tail;
the mean and p50 do. For each logged submission this prints the measured distribution beside the
model's at its Server operating point (the QPS search that ``mtiasim mlperf`` and ``mtiasim
validate`` run), the model's at the log's own load (LoadGen's scheduled rate where the log gives
it, else the completed one; ``predict(..., qps=...)``: 20,000 requests over the system), and the
model's throughput beside the measured one. Near capacity the two model rows can differ widely:
the search's p99s are read on its knee, the log's load may lie on either side of it.

Run: ``.venv/bin/python benchmarks/server_latency_shape.py [key ...]`` (keys of server_latency.yaml;
about 4 minutes on a 2-core machine, most of it the LLM searches).
"""

from __future__ import annotations

import sys

from mtiasim.serving.mlperf import predict
from mtiasim.validate import server_latency_logs


def _row(label: str, d: dict) -> str:
    return f"  {label:34s}" + "".join(f"{d.get(k, float('nan')):>11,.1f}" for k in ("mean", "p50", "p90", "p99"))


def _distributions(p) -> dict:
    """A prediction's latency distributions by the log's keys (seconds)."""
    out = {"latency_ms": p.latency_s}
    if p.report is not None:
        out |= {"ttft_ms": p.report.ttft_s, "tpot_ms": p.report.tpot_s}
    return out


def main(benchmarks: list[str]) -> None:
    data = server_latency_logs()
    for bench in benchmarks or list(data):
        m = data[bench]
        p = predict(m.get("benchmark", bench), m["system"], "Server", mlperf_round=m["round"])
        print(f"{bench} on {m['system']} ({m['round']}): samples/s measured {m['completed_samples_per_s']:,.1f}, "
              f"model {p.samples_per_s:,.1f} ({p.samples_per_s / m['completed_samples_per_s'] - 1:+.1%})")
        print(f"  {'(ms)':34s}{'mean':>11s}{'p50':>11s}{'p90':>11s}{'p99':>11s}")
        load = m.get("scheduled_samples_per_s", m["completed_samples_per_s"])
        at_load = predict(m.get("benchmark", bench), m["system"], "Server", qps=load, mlperf_round=m["round"])
        models = {"model": _distributions(p), f"model at {load:,.1f}/s": _distributions(at_load)}
        for key in ("tpot_ms", "ttft_ms", "latency_ms"):
            if key not in m:
                continue
            print(_row(f"{key[:-3]} measured", m[key]))
            for label, model in models.items():
                got = model[key]
                print(_row(f"{key[:-3]} {label}", {k: getattr(got, k) * 1e3 for k in ("mean", "p50", "p90", "p99")}))
        print(f"  source: {m['source']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
