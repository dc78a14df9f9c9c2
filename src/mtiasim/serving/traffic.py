"""Request streams: Poisson arrivals (or all at once, for Offline) with per-dataset lengths."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import yaml


@dataclass(frozen=True)
class Request:
    id: int
    arrival_s: float  # when the engine receives it
    prompt_tokens: int
    output_tokens: int
    #: when the client (MLPerf's LoadGen) issued it, where a harness held it before the engine got
    #: it (harness_batches); None: at arrival_s. Latencies count from here.
    issued_s: float | None = None

    @property
    def start_s(self) -> float:
        """When the request's latency clock starts: its issue time, else its arrival."""
        return self.arrival_s if self.issued_s is None else self.issued_s


@lru_cache(maxsize=1)
def datasets() -> dict:
    return yaml.safe_load(resources.files("mtiasim").joinpath("data", "serving", "datasets.yaml").read_text())


#: which dataset each zoo model is served with in MLPerf (ranking stand-ins take DLRM-v2's queries). llama3.1-8b:
#: the CNN-DailyMail articles GPT-J summarises, but with its own output lengths (capped at 128 tokens);
#: llama3.1-405b: its long-context mix (data/serving/datasets.yaml says which lengths are estimates).
DATASET_OF = {"llama2-70b": "openorca", "llama2-7b": "openorca", "llama2-13b": "openorca",
              "mixtral-8x7b": "mlperf_mixtral", "llama3.1-8b": "mlperf_llama3.1_8b", "llama3.1-70b": "openorca",
              "llama3.1-405b": "mlperf_llama3.1_405b", "gptj-6b": "cnn_dailymail",
              # batched models: what one query holds (DLRM: user-item pairs; BERT: one SQuAD sequence)
              "dlrm-v2": "criteo_aggregated", "ranking-lc": "criteo_aggregated", "ranking-hc": "criteo_aggregated",
              "bert-large": "squad_v1.1"}


def _lengths(spec: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    if spec["kind"] == "constant":
        return np.full(n, int(spec["value"]))
    mean, cv = float(spec["mean"]), float(spec["cv"])
    sigma = math.sqrt(math.log(1 + cv * cv))
    mu = math.log(mean) - sigma * sigma / 2
    x = rng.lognormal(mu, sigma, n)
    return np.clip(np.rint(x), spec["min"], spec["max"]).astype(int)


def generate(n: int, qps: float | None, *, dataset: str = "openorca", seed: int = 0,
             prompt_tokens: int | None = None, output_tokens: int | None = None) -> list[Request]:
    """``n`` requests. ``qps`` None means all arrive at t=0 (MLPerf Offline); otherwise Poisson
    arrivals at ``qps``. Lengths come from ``dataset`` unless fixed by the arguments."""
    if n < 1:
        raise ValueError("n (number of requests) must be >= 1")
    if qps is not None and qps <= 0:
        raise ValueError(f"qps must be > 0, got {qps}")
    ds = datasets().get(dataset)
    if ds is None:
        raise ValueError(f"unknown dataset '{dataset}'; known: {', '.join(datasets())}")
    rng = np.random.default_rng(seed)
    arrivals = np.zeros(n) if qps is None else np.cumsum(rng.exponential(1.0 / qps, n))
    pin = np.full(n, prompt_tokens) if prompt_tokens else _lengths(ds["input"], n, rng)
    pout = np.full(n, output_tokens) if output_tokens else _lengths(ds["output"], n, rng)
    return [Request(i, float(a), int(p), int(o)) for i, (a, p, o) in enumerate(zip(arrivals, pin, pout))]


def harness_batches(requests: list[Request], batch: int, timeout_s: float) -> list[list[Request]]:
    """The batches a harness-side batcher in front of the engines forms (AMD's MLPerf vLLM
    harness with ``--enable-batcher``: one queue for LoadGen's queries, from which a batch of at
    most ``batch`` queries leaves for one engine when ``batch`` wait, or when ``timeout_s`` has
    passed since the last batch left and some wait). A request reaches its engine when its batch
    leaves (``arrival_s``); its issue time is kept in ``issued_s``. The harness checks its queue at
    each arrival and at its timeout, so a batch due by time leaves at the timeout itself here (at
    most one inter-arrival time early)."""
    if batch < 1 or timeout_s < 0:
        raise ValueError(f"harness batcher: need batch >= 1 and timeout_s >= 0, got {batch}, {timeout_s}")
    out: list[list[Request]] = []
    waiting: list[Request] = []
    last = None  # when the last batch left (the batcher's timer)

    def leave(t: float) -> None:
        nonlocal waiting, last
        out.append([Request(r.id, t, r.prompt_tokens, r.output_tokens, r.start_s) for r in waiting[:batch]])
        waiting, last = waiting[batch:], t

    for r in sorted(requests, key=lambda r: (r.arrival_s, r.id)):
        if last is None:
            last = r.arrival_s
        while waiting and last + timeout_s <= r.arrival_s:
            leave(last + timeout_s)
        waiting.append(r)
        if len(waiting) >= batch or r.arrival_s - last >= timeout_s:
            leave(r.arrival_s)
    while waiting:
        leave(last + timeout_s)
    return out


TRACE_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")


def load_trace(path: str) -> list[Request]:
    """Requests from a CSV with columns ``arrival_s, prompt_tokens, output_tokens`` (one row per
    request; arrival times in seconds, any order). Errors name the file, the row and the column."""
    import csv

    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{path}: missing column(s) {missing}; a trace needs {list(TRACE_COLUMNS)}")
            out = []
            for i, row in enumerate(reader):
                try:
                    a = float(row["arrival_s"])
                    p, o = int(row["prompt_tokens"]), int(row["output_tokens"])
                except (TypeError, ValueError):
                    raise ValueError(f"{path}: row {i + 2}: arrival_s must be a number and prompt_tokens/"
                                     f"output_tokens integers, got {dict(row)}") from None
                if a < 0 or p < 1 or o < 1:
                    raise ValueError(f"{path}: row {i + 2}: need arrival_s >= 0, prompt_tokens >= 1, output_tokens >= 1")
                out.append(Request(i, a, p, o))
    except OSError as e:
        raise ValueError(f"{path}: cannot read trace: {e.strerror}") from None
    if not out:
        raise ValueError(f"{path}: the trace has no requests")
    return out
