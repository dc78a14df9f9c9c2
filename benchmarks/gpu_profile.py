"""Profile one zoo-model run on a GPU: CUDA time per kernel name (torch.profiler), for finding
where the GPU engine's end-to-end prediction and the measurement part (not in CI).

    PYTHONPATH=src python benchmarks/gpu_profile.py --out prof.json --phase decode --batch 32 --n 512
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile


def main() -> None:
    from mtiasim.frontend import zoo

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default="llama2-7b")
    ap.add_argument("--phase", default="decode", choices=("prefill", "decode"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=512, help="prompt length (prefill) or cached length (decode)")
    a = ap.parse_args()
    kw = dict(seq_len=a.n) if a.phase == "prefill" else dict(kv_len=a.n)
    w = zoo.get(a.model).build(batch=a.batch, phase=a.phase, device="cuda", **kw)
    module = w.module.to(torch.bfloat16)
    inputs = tuple(t.to(torch.bfloat16) if t.is_floating_point() else t for t in w.example_inputs)
    with torch.inference_mode():
        for _ in range(3):
            module(*inputs)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            module(*inputs)
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            rows.append({"kernel": e.key[:160], "count": e.count, "device_time_s": t * 1e-6})
    rows.sort(key=lambda r: -r["device_time_s"])
    total = sum(r["device_time_s"] for r in rows)
    with open(a.out, "w") as f:
        json.dump({"model": a.model, "phase": a.phase, "batch": a.batch, "n": a.n, "total_device_s": total,
                   "kernels": rows}, f, indent=1)
    print(f"total device time {total * 1e3:.2f} ms")
    for r in rows[:25]:
        print(f"{r['device_time_s'] * 1e3:8.3f} ms {r['count']:5d}  {r['kernel'][:110]}")


if __name__ == "__main__":
    main()
