"""Ops that run on the host CPU because the accelerator has no kernel for them."""

from __future__ import annotations

from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import OpDef, Work, register_op


@register_op
class CPUFallback(OpDef):
    """An aten op the accelerator cannot run, executed on the host as the MTIA runtime does
    (KernelEvolve, arXiv 2512.23236: missing ATen ops fall back to CPU). Its inputs cross the host
    link to the host and its outputs come back; the engine charges both transfers, the host's
    compute and a round-trip overhead. ``attrs['aten']`` names the op, ``attrs['shapes']`` /
    ``attrs['dtypes']`` record its outputs."""

    name = "cpu_fallback"
    engine = "none"

    def infer(self, inputs, attrs):
        return [TensorSpec(tuple(s), d) for s, d in zip(attrs["shapes"], attrs["dtypes"])]

    def work(self, inputs, outputs, attrs):
        # host compute is estimated as one op per input and output element
        flops = float(sum(t.numel for t in inputs) + sum(t.numel for t in outputs))
        return Work(vector_flops=flops,
                    bytes_read={f"in{i}": t.nbytes for i, t in enumerate(inputs)},
                    bytes_written={f"out{i}": t.nbytes for i, t in enumerate(outputs)})
