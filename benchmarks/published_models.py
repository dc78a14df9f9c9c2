"""The GPU engine beside whole-model latencies a vendor publishes (data/calibration/measured/published/).

    .venv/bin/python benchmarks/published_models.py [--set tensorrt-demo-bert] [--min-batch 1]

Prints every point (measured, predicted, error) and the error per engine and sequence length.
"""

from __future__ import annotations

import argparse

from mtiasim.engines.measured import summary
from mtiasim.engines.published import check_published, load_published, published_sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="tensorrt-demo-bert", choices=published_sets())
    ap.add_argument("--min-batch", type=int, default=1)
    a = ap.parse_args()
    data = load_published(a.set)
    print(f"{a.set}: {data['gpu']} (preset {data['preset']}); {data['source']}")
    checks = check_published(a.set, min_batch=a.min_batch)
    print(f"{'engine':24s} {'batch':>6s} {'measured ms':>12s} {'predicted ms':>13s} {'error':>8s}")
    for c in checks:
        print(f"{c.kind:24s} {c.label:>6s} {c.measured_s * 1e3:12.2f} {c.predicted_s * 1e3:13.2f} {c.error_pct:+7.1f}%")
    print()
    for kind, s in summary(checks).items():
        print(f"{kind:24s} n={s['n']:2d}  MAPE {s['mape_pct']:5.1f}%  bias {s['bias_pct']:+6.1f}%")


if __name__ == "__main__":
    main()
