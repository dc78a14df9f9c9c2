"""torch.compile(model, backend="mtiasim"): PyTorch's outputs, and the simulated time of each
compiled graph."""

import pytest
import torch
from torch import nn

import mtiasim
from mtiasim import compile_backend

compile_backend.register()  # an installed mtiasim is found through its entry point; this covers a bare tree


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 256)
        self.down = nn.Linear(256, 64)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


def test_outputs_are_pytorch_and_time_is_simulated():
    torch.manual_seed(0)
    compile_backend.reset()
    torch._dynamo.reset()
    m = MLP().eval()
    x = torch.randn(32, 64)
    seen = []
    c = torch.compile(m, backend="mtiasim", options={"chip": "mtia-200", "callback": seen.append})
    with torch.no_grad():
        torch.testing.assert_close(c(x), m(x))
    r = mtiasim.last_result()
    assert r is not None and seen == [r] and mtiasim.compiled_results() == [r]
    assert r.chip == "mtia-200" and r.latency_s > 0
    gemms = [o for o in r.ops if o.op == "linear"]
    assert len(gemms) == 2  # the relu rides in the first GEMM's epilogue
    # the weights Dynamo passes as graph inputs are captured as weights: 2*32*64*256 flops per GEMM
    assert sum(o.flops for o in gemms) >= 2 * (2 * 32 * 64 * 256)
    assert r.batch == 32  # the leading dim of the user input, not of a weight


def test_same_as_simulate_on_the_module():
    """The backend's prediction is the one simulate() makes for the same module and input."""
    compile_backend.reset()
    torch._dynamo.reset()
    m = MLP().eval()
    x = torch.randn(8, 64)
    with torch.no_grad():
        torch.compile(m, backend="mtiasim", options={"chip": "h100-sxm-80gb"})(x)
    direct = mtiasim.simulate(m, chip="h100-sxm-80gb", example_inputs=(x,))
    assert mtiasim.last_result().latency_s == pytest.approx(direct.latency_s, rel=1e-9)


def test_graph_breaks_give_one_result_per_graph():
    class Breaks(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            h = self.a(x)
            torch._dynamo.graph_break()
            return self.b(h)

    compile_backend.reset()
    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(Breaks().eval(), backend="mtiasim")(torch.randn(4, 16))
    assert len(mtiasim.compiled_results()) == 2


def test_unknown_option_is_named():
    torch._dynamo.reset()
    c = torch.compile(MLP().eval(), backend="mtiasim", options={"chipp": "mtia-200"})
    with pytest.raises(Exception, match="chipp"):
        c(torch.randn(2, 64))
