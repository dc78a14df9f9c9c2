"""PyTorch in: ``torch.export`` a module (on meta/fake tensors) and lower it to the IR graph."""

from __future__ import annotations

import functools
import hashlib
import operator
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.fx

import mtiasim.frontend.custom_ops  # noqa: F401  (registers the fused ops before export)
from mtiasim.frontend.lowering import IGNORED, RULES, UNSUPPORTED
from mtiasim.frontend.rewrite import rewrite
from mtiasim.graph.dtypes import from_torch
from mtiasim.graph.ir import Graph, Node, TensorSpec
from mtiasim.graph.ops import get_op
from mtiasim.graph.ops.generic import AtenOp

_KIND = {"PARAMETER": "param", "BUFFER": "buffer", "USER_INPUT": "input", "CONSTANT_TENSOR": "const",
         "CUSTOM_OBJ": "const", "TOKEN": "const"}


class CaptureError(RuntimeError):
    """A module could not be captured: names each op (and its source line) that blocks it."""


def _source(n: torch.fx.Node) -> str | None:
    trace = n.meta.get("stack_trace")
    if not trace:
        return None
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    if not frames:
        return None
    torch_dir = os.path.dirname(torch.__file__)
    user = [f for f in frames if not f[0].startswith(torch_dir)] or frames  # innermost user frame
    path, line, fn, code = user[-1]
    return f"{path}:{line} in {fn}: {code.strip()}"


def _scope(n: torch.fx.Node) -> str | None:
    """Module path of the innermost nn.Module the op was called in ('' for the top module)."""
    stack = n.meta.get("nn_module_stack")
    if not stack:
        return None
    return str(list(stack.values())[-1][0])


def _packet(target: Any) -> str:
    s = str(target)  # "aten.linear.default" / "mtiasim.tbe.default"
    return s.rsplit(".", 1)[0] if s.count(".") >= 2 else s


def _spec(val: Any, kind: str = "activation") -> TensorSpec:
    try:
        shape = tuple(int(d) for d in val.shape)
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"data-dependent or dynamic shape {tuple(val.shape)}") from e
    return TensorSpec(shape, from_torch(val.dtype), kind)  # type: ignore[arg-type]


def _template(a: Any, names: dict[str, str]) -> Any:
    if isinstance(a, torch.fx.Node):
        return ("__tensor__", names.get(a.name, a.name))
    if isinstance(a, (list, tuple)):
        return type(a)(_template(x, names) for x in a)
    return a


def _positional(a: Any, order: dict[str, int]) -> Any:
    """The call's arguments with each tensor as ``('__in__', i)``, ``i`` its position among the
    node's inputs (``graph/ops/generic.py`` binds them for shape inference and numerics)."""
    if isinstance(a, torch.fx.Node):
        return ("__in__", order[a.name])
    if isinstance(a, (list, tuple)):
        return type(a)(_positional(x, order) for x in a)
    if isinstance(a, dict):
        return {k: _positional(v, order) for k, v in a.items()}
    return a


def _unlowered(ep: torch.export.ExportedProgram) -> set[Any]:
    return {n.target for n in ep.graph.nodes if n.op == "call_function"
            and isinstance(n.target, torch._ops.OpOverload) and _packet(n.target) not in RULES
            and _packet(n.target) not in IGNORED}


def decompose_unlowered(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """Ops the IR has no rule for are decomposed by PyTorch's own Core ATen decomposition table,
    every op with a rule kept whole (``linear`` stays one GEMM, ``scaled_dot_product_attention``
    one attention). A graph whose ops all have rules is returned unchanged."""
    if not _unlowered(ep):
        return ep
    table = torch.export.default_decompositions()
    for op in list(table.keys()):
        if _packet(op) in RULES or _packet(op) in IGNORED:
            del table[op]
    return ep.run_decompositions(table)


def capture(module: torch.nn.Module, example_inputs: Sequence[Any], *, name: str | None = None,
            allow_cpu_fallback: bool = False) -> Graph:
    """Export ``module`` with ``example_inputs`` (meta, fake or real tensors) to an IR :class:`Graph`.

    Unsupported aten ops raise :class:`CaptureError` naming each op and its source line, unless
    ``allow_cpu_fallback`` is set, in which case they become ``cpu_fallback`` nodes that run on
    the host (and are charged for it)."""
    module = module.eval()
    try:
        ep = torch.export.export(module, tuple(example_inputs), strict=False)
    except Exception as e:  # torch raises many types; keep its message, which names the user line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = ("a tensor of these sizes has more elements than a 64-bit count holds: use a smaller batch or "
                "sequence" if "overflow" in first.lower() else
                "data-dependent control flow or shapes cannot be captured statically; see the traceback above")
        raise CaptureError(f"torch.export could not trace {type(module).__name__}: {type(e).__name__}: {first}\n"
                           f"({hint})") from e
    return lower(decompose_unlowered(ep), name=name or type(module).__name__, allow_cpu_fallback=allow_cpu_fallback)


def lower(ep: torch.export.ExportedProgram, *, name: str, allow_cpu_fallback: bool = False) -> Graph:
    kinds = {s.arg.name: _KIND.get(s.kind.name, "input") for s in ep.graph_signature.input_specs
             if hasattr(s.arg, "name")}
    targets = {s.arg.name: s.target for s in ep.graph_signature.input_specs
               if hasattr(s.arg, "name") and s.target is not None}
    tensors: dict[str, TensorSpec] = {}
    names: dict[str, str] = {}  # fx node name -> IR tensor name
    nodes: list[Node] = []
    inputs: list[str] = []
    problems: list[str] = []
    outputs: list[str] = []

    for n in ep.graph.nodes:
        if n.op == "placeholder":
            val = n.meta.get("val")
            if isinstance(val, torch.Tensor):
                tensors[n.name] = _spec(val, kinds.get(n.name, "input"))
                names[n.name] = n.name
                if tensors[n.name].kind == "input":
                    inputs.append(n.name)
            continue
        if n.op == "output":
            flat: list[torch.fx.Node] = []
            torch.fx.node.map_arg(n.args[0], flat.append)
            outputs = [names[o.name] for o in flat if o.name in names]
            continue
        if n.op != "call_function":
            continue
        if n.target is operator.getitem:
            src, idx = n.args
            names[n.name] = f"{src.name}:{idx}"
            continue
        packet = _packet(n.target)
        if packet in IGNORED:
            continue
        try:
            val = n.meta.get("val")
            vals = list(val) if isinstance(val, (list, tuple)) else [val]
            out_specs = [_spec(v) for v in vals if isinstance(v, torch.Tensor)]
        except ValueError as e:
            problems.append(f"  {packet} (node '{n.name}') at {_source(n) or '<unknown>'}: {e}")
            continue
        except Exception as e:  # symbolic sizes that cannot be read statically
            problems.append(f"  {packet} (node '{n.name}') at {_source(n) or '<unknown>'}: data-dependent shape ({e})")
            continue
        if problems and any(a.name not in names for a in n.all_input_nodes):
            continue  # depends on a node already reported as a problem
        multi = isinstance(val, (list, tuple))
        out_names = [f"{n.name}:{i}" for i in range(len(out_specs))] if multi else [n.name]
        if not multi:
            names[n.name] = n.name
        for o, s in zip(out_names, out_specs):
            tensors[o] = s
        call = (str(n.target), _template(n.args, names), _template(dict(n.kwargs), names))
        rule = RULES.get(packet)
        if rule is None:
            if not allow_cpu_fallback:
                why = f": {UNSUPPORTED[packet]}" if packet in UNSUPPORTED else ""
                where = f", in module '{_scope(n)}'" if _scope(n) else ""
                problems.append(f"  {packet} (node '{n.name}'{where}) at {_source(n) or '<unknown>'}{why}")
                continue
            ins = [names[a.name] for a in n.all_input_nodes if a.name in names]
            nodes.append(Node(n.name, "cpu_fallback", ins, out_names,
                              {"aten": packet, "shapes": [s.shape for s in out_specs],
                               "dtypes": [s.dtype for s in out_specs], "call": call},
                              _source(n), packet, _scope(n)))
            continue
        try:
            op, targs, attrs = rule(n)
        except NotImplementedError as e:
            problems.append(f"  {packet} (node '{n.name}') at {_source(n) or '<unknown>'}: {e}")
            continue
        ins = [names[t.name] for t in targs if t is not None]
        src, scope = _source(n), _scope(n)
        if op == "moe_ffn":  # one op in PyTorch; in the IR the kernels GPUs run (graph/ops/moe.py)
            x, router, w1, w3, w2 = ins
            g, e, h2, h, y = (f"{n.name}.{s}" for s in ("gates", "experts", "gate_up", "act", "down"))
            (t, d), k, f = tensors[x].shape, attrs["top_k"], tensors[w1].shape[1]
            tensors[g] = TensorSpec((t, k), "fp32")
            tensors[e] = TensorSpec((t, k), "int64")
            tensors[h2] = TensorSpec((t * k, 2 * f), tensors[x].dtype)
            tensors[h] = TensorSpec((t * k, f), tensors[x].dtype)
            tensors[y] = TensorSpec((t * k, d), tensors[x].dtype)
            nodes += [Node(f"{n.name}.router", "moe_router", [x, router], [g, e], dict(attrs), src, packet, scope),
                      Node(f"{n.name}.up", "moe_expert_up", [x, e, w1, w3], [h2], {}, src, packet, scope),
                      Node(f"{n.name}.act", "silu_and_mul", [h2], [h], {}, src, packet, scope),
                      Node(f"{n.name}.down", "moe_expert_down", [h, e, w2], [y], {}, src, packet, scope),
                      Node(n.name, "moe_combine", [y, g], out_names[:1], {}, src, packet, scope)]
            continue
        if op == "dcn_cross":  # one op in PyTorch; two GEMM kernels on every stack (graph/ops/dense.py)
            x0, xl, u, v, b = ins
            h = f"{n.name}.down"
            tensors[h] = TensorSpec((*tensors[xl].shape[:-1], tensors[u].shape[0]), tensors[xl].dtype)
            nodes += [Node(h, "dcn_down", [xl, u], [h], {}, src, packet, scope),
                      Node(n.name, "dcn_up", [x0, xl, h, v, b], out_names[:1], {}, src, packet, scope)]
            continue
        n_out = 1 if op in ("embedding_bag", "layernorm", "batchnorm", "pool2d") else len(out_names)
        attrs["call"] = call
        if isinstance(get_op(op), AtenOp):
            order = {t.name: i for i, t in enumerate(x for x in targs if x is not None)}
            attrs["op_call"] = (str(n.target), _positional(n.args, order), _positional(dict(n.kwargs), order))
        nodes.append(Node(n.name, op, ins, out_names[:n_out], attrs, src, packet, scope))

    if problems:
        raise CaptureError(
            f"{name}: {len(problems)} op(s) cannot be lowered to mtiasim's IR:\n" + "\n".join(problems)
            + ("\nPass --allow-cpu-fallback (allow_cpu_fallback=True) to run unsupported ops on the host."
               if any("data-dependent" not in p for p in problems) else
               "\nShapes that depend on tensor values cannot be simulated statically; make them static.")
        )
    return rewrite(Graph(name=name, tensors=tensors, nodes=nodes, inputs=inputs, outputs=outputs,
                         meta={"targets": targets}))


# ---- capture cache ------------------------------------------------------------------------------
def cache_dir() -> Path:
    return Path(os.environ.get("MTIASIM_CACHE_DIR") or Path.home() / ".cache" / "mtiasim") / "graphs"


@functools.cache
def _frontend_digest() -> str:
    """Digest of the frontend's source (capture, lowering, custom ops, zoo): a cached graph is
    only reused by the code that captured it, so editing how a model lowers never reads a stale
    graph (the package version alone does not change between commits)."""
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def capture_cached(key: str, build: Any, *, name: str, allow_cpu_fallback: bool = False) -> Graph:
    """Capture once per ``key`` (a string that defines the graph) and reuse it from disk.

    ``build()`` returns ``(module, example_inputs)`` and is only called on a miss."""
    from mtiasim import __version__

    digest = hashlib.sha256(f"{key}|torch={torch.__version__}|mtiasim={__version__}|fb={allow_cpu_fallback}"
                            f"|frontend={_frontend_digest()}".encode()).hexdigest()[:24]
    path = cache_dir() / f"{digest}.pkl"
    if path.exists():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:  # a corrupt or stale cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    module, inputs = build()
    graph = capture(module, inputs, name=name, allow_cpu_fallback=allow_cpu_fallback)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        pickle.dump(graph, f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)
    return graph
