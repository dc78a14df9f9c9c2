"""``torch.compile(model, backend="mtiasim", options={...})``: real outputs, simulated time.

Each graph TorchDynamo hands the backend is captured and simulated on the chip in ``options``
(``chip``, ``dtype``, ``engine``, ``engine_options``, ``callback``) for the shapes it was compiled
for, and runs eagerly on the host, so the outputs are PyTorch's. The results are read with
:func:`last_result` (the latest graph) or :func:`compiled_results` (every graph since
:func:`reset`); more than one graph for one model means Dynamo broke the graph, and each break's
graph is timed on its own. ``options['callback']`` is called with each result as it is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mtiasim.engines.result import Result

_RESULTS: list[Result] = []
_OPTIONS = {"chip", "dtype", "engine", "engine_options", "callback", "batch", "act_dtype"}


def last_result() -> Result | None:
    """The simulated result of the graph ``torch.compile(backend="mtiasim")`` compiled last."""
    return _RESULTS[-1] if _RESULTS else None


def compiled_results() -> list[Result]:
    """Every graph's result since :func:`reset`, in compile order."""
    return list(_RESULTS)


def reset() -> None:
    _RESULTS.clear()


class _Lifted(nn.Module):
    """Dynamo passes a module's parameters to the graph as inputs; this gives them back to the
    capture as parameters (stored weights, not per-request inputs)."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any]):
        super().__init__()
        self.gm = gm
        self.n_args = len(example_inputs)
        self.param_pos = [i for i, t in enumerate(example_inputs) if isinstance(t, nn.Parameter)]
        for j, i in enumerate(self.param_pos):
            self.register_parameter(f"p{j}", example_inputs[i])

    def forward(self, *user: Any) -> Any:
        args, it = [], iter(user)
        params = {i: getattr(self, f"p{j}") for j, i in enumerate(self.param_pos)}
        for i in range(self.n_args):
            args.append(params[i] if i in params else next(it))
        return self.gm(*args)


def mtiasim_backend(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                    options: dict[str, Any] | None = None) -> Callable[..., Any]:
    from mtiasim.api import simulate

    opts = dict(options or {})
    unknown = sorted(set(opts) - _OPTIONS)
    if unknown:
        raise ValueError(f"torch.compile(backend='mtiasim'): unknown option(s) {unknown}; known: {sorted(_OPTIONS)}")
    module = _Lifted(gm, example_inputs)
    user = tuple(t for i, t in enumerate(example_inputs) if i not in module.param_pos)
    callback = opts.pop("callback", None)
    result = simulate(module, chip=opts.pop("chip", "mtia-200"), example_inputs=user, **opts)
    _RESULTS.append(result)
    if callback is not None:
        callback(result)
    return gm.forward


def register() -> None:
    """Make ``backend="mtiasim"`` known to ``torch.compile``. An installed mtiasim needs no call:
    torch finds the backend through the package's ``torch_dynamo_backends`` entry point (so
    ``import mtiasim`` does not pay for importing TorchDynamo); a source tree on ``sys.path`` calls this."""
    from torch._dynamo import list_backends, register_backend

    if "mtiasim" not in list_backends(exclude_tags=()):
        register_backend(mtiasim_backend, name="mtiasim")
