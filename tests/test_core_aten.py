"""The Core ATen op set lowers: every op PyTorch tags ``core`` has a rule (or is bookkeeping, or
is refused with a reason), and modules written with the less common ones capture with no host
fallback and compute what PyTorch computes."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mtiasim
from mtiasim.frontend.capture import CaptureError, capture
from mtiasim.frontend.lowering import IGNORED, RULES, UNSUPPORTED
from mtiasim.graph import get_op
from mtiasim.graph.execute import execute, module_feeds


def core_aten_ops() -> set[str]:
    ops = set()
    for name in dir(torch.ops.aten):
        packet = getattr(torch.ops.aten, name, None)
        if not isinstance(packet, torch._ops.OpOverloadPacket):
            continue
        if any(torch.Tag.core in getattr(packet, o).tags for o in packet.overloads()):
            ops.add(str(packet))
    return ops


def test_every_core_aten_op_of_the_pinned_torch_has_a_lowering():
    core = core_aten_ops()
    assert len(core) > 150  # the walk found the list (torch 2.13 tags 160 packets core)
    missing = sorted(core - set(RULES) - IGNORED - set(UNSUPPORTED))
    assert not missing, f"Core ATen ops without a lowering: {missing}"
    # what is refused is refused for a stated reason about the input, and is a small set
    assert len(set(UNSUPPORTED) & core) <= 5
    assert all("data-dependent" in why or "complex" in why for why in UNSUPPORTED.values())


class Assorted(nn.Module):
    """Ops of the Core ATen set the zoo does not use, each a different cost family."""

    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(4, 8, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.gn = nn.GroupNorm(2, 8)

    def forward(self, x, idx):  # x [B, 4, 16], idx [B, 5]
        h = self.conv1d(x)  # conv_nd (1-D)
        h = self.gn(h)  # group norm
        c = torch.cumsum(h, dim=-1) + torch.cumprod(torch.sigmoid(h), dim=-1)  # scans
        vals, ids = torch.topk(c, 3, dim=-1)  # sort family
        s, _ = torch.sort(c, dim=1)
        z = x.new_zeros(x.shape[0], 32).scatter_add(1, idx, torch.ones_like(idx, dtype=x.dtype))  # scatter
        p = F.pad(h, (1, 2), mode="reflect")  # layout copy
        img = F.interpolate(h.view(h.shape[0], 8, 4, 4), scale_factor=2, mode="bilinear")  # resample
        d = self.deconv(img)  # transposed conv
        v = torch.var(c, dim=-1) + torch.amin(c, dim=-1) + torch.argmax(c, dim=-1).float()  # reductions
        e = torch.erf(h).flip(-1) + torch.remainder(h, 0.5) + torch.atan2(h, c)  # pointwise
        w = torch.where(torch.isnan(h) | (h > 0), h, torch.expm1(h))  # predicates, bitwise or
        return (vals.sum() + ids.float().mean() + s.mean() + z.sum() + p.mean() + d.mean() + v.sum()
                + e.mean() + w.mean() + F.log_softmax(h, -1).mean())


def _inputs():
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 4, 16, generator=g), torch.randint(0, 32, (2, 5), generator=g)


def test_assorted_core_ops_capture_without_fallback_and_match_pytorch():
    torch.manual_seed(0)
    m = Assorted().eval()
    inputs = _inputs()
    g = capture(m, inputs)
    ops = g.op_counts()
    for op in ("conv_nd", "groupnorm", "scan", "sort", "scatter", "layout_copy", "resample", "reduce",
               "erf", "remainder", "atan2", "log_softmax"):
        assert op in ops, op
    assert "cpu_fallback" not in ops
    # every node's shape inference agrees with what torch.export recorded
    for node in g.nodes:
        specs = get_op(node.op).infer([g.tensors[t] for t in node.inputs], node.attrs)
        assert [s.shape for s in specs][: len(node.outputs)] == [g.tensors[o].shape for o in node.outputs], node
    with torch.no_grad():
        want = m(*inputs)
        feeds = module_feeds(g, m, inputs)
        torch.testing.assert_close(execute(g, feeds)[0], want, rtol=1e-5, atol=1e-5)
        # the generic ops' reference numerics are their aten calls: the same values
        generic = {"conv_nd", "groupnorm", "scan", "sort", "scatter", "layout_copy", "resample", "reduce"}
        torch.testing.assert_close(execute(g, feeds, reference_ops=generic)[0], want, rtol=1e-5, atol=1e-5)


def test_assorted_ops_are_charged_on_the_chip():
    with torch.device("meta"):
        m = Assorted()
    x, idx = (t.to("meta") for t in _inputs())
    r = mtiasim.simulate(m, chip="mtia-200", example_inputs=(x, idx))
    assert r.latency_s > 0 and not [o for o in r.ops if o.bound == "host"]
    by_op = {o.op: o for o in r.ops}
    # the transposed convolution is a GEMM: 2 * (B*H_in*W_in) * (C_out*k*k) * C_in = 2*(2*64)*(4*4)*8 flops
    assert by_op["conv_nd"].flops >= 2 * 2 * 64 * 16 * 8


class Sorted(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1)[0]


def test_sort_costs_n_log_n():
    """Sorting rows of d elements: n*log2(d) compare-exchanges; 4x longer rows of the same total
    size cost log2(4096)/log2(1024) = 1.2x the vector work."""
    with torch.device("meta"):
        short = mtiasim.simulate(Sorted(), chip="mtia-200", example_inputs=(torch.empty(64, 1024),))
        long = mtiasim.simulate(Sorted(), chip="mtia-200", example_inputs=(torch.empty(16, 4096),))
    f_short = sum(o.flops for o in short.ops if o.op == "sort")
    f_long = sum(o.flops for o in long.ops if o.op == "sort")
    assert f_short == pytest.approx(64 * 1024 * 10) and f_long == pytest.approx(16 * 4096 * 12)


class NonZero(nn.Module):
    def forward(self, x):
        return torch.nonzero(x)


def test_data_dependent_core_op_is_refused_with_its_reason():
    with pytest.raises(CaptureError, match="nonzero|data-dependent"):
        capture(NonZero(), (torch.randn(8),))
