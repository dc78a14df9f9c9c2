"""aten -> IR lowering table.

Each entry maps an aten/custom op (by its overload packet name, e.g. ``aten.linear``) to a
function that returns ``(ir_op, tensor_args, attrs)`` for the IR node. ``tensor_args`` are fx
nodes (or None for an absent optional). Adding support for an op is adding an entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.fx

from mtiasim.graph.dtypes import from_torch
from mtiasim.graph.ops.generic import ATEN_TO_GENERIC

Lowered = tuple[str, list[Any], dict[str, Any]]
Rule = Callable[[torch.fx.Node], Lowered]

RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            RULES[n] = fn
        return fn

    return deco


def _arg(n: torch.fx.Node, i: int, name: str, default: Any = None) -> Any:
    if len(n.args) > i:
        return n.args[i]
    return n.kwargs.get(name, default)


def _tensors(*xs: Any) -> list[Any]:
    return [x for x in xs if isinstance(x, torch.fx.Node)]


def _shapes(n: torch.fx.Node) -> list[tuple[int, ...]]:
    val = n.meta["val"]
    vals = val if isinstance(val, (list, tuple)) else [val]
    return [tuple(int(d) for d in v.shape) for v in vals]


# ---------------------------------------------------------------------------------------------
@rule("aten.linear")
def _linear(n):
    return "linear", _tensors(n.args[0], n.args[1], _arg(n, 2, "bias")), {}


@rule("aten.mm", "aten.bmm", "aten.matmul")
def _mm(n):
    return "matmul", [n.args[0], n.args[1]], {}


@rule("aten.scaled_dot_product_attention")
def _sdpa(n):
    mask = _arg(n, 3, "attn_mask")
    attrs = {"causal": bool(_arg(n, 5, "is_causal", False)), "scale": _arg(n, 6, "scale")}
    return "attention", _tensors(n.args[0], n.args[1], n.args[2], mask), attrs


@rule("aten.embedding")
def _embedding(n):
    return "embedding", [n.args[0], n.args[1]], {}


@rule("aten.embedding_bag", "aten._embedding_bag")
def _embedding_bag(n):
    mode = {0: "sum", 1: "mean", 2: "max"}[int(_arg(n, 4, "mode", 0))]
    psw = _arg(n, 6, "per_sample_weights")
    attrs = {"mode": mode, "include_last_offset": bool(_arg(n, 7, "include_last_offset", False))}
    return "embedding_bag", _tensors(n.args[0], n.args[1], n.args[2], psw), attrs


@rule("aten.rms_norm")
def _rms(n):
    return "rmsnorm", _tensors(n.args[0], _arg(n, 2, "weight")), {
        "normalized_shape": list(n.args[1]), "eps": _arg(n, 3, "eps")}


@rule("aten.layer_norm", "aten.native_layer_norm")
def _ln(n):
    eps = _arg(n, 4, "eps", 1e-5)
    return "layernorm", _tensors(n.args[0], _arg(n, 2, "weight"), _arg(n, 3, "bias")), {
        "normalized_shape": list(n.args[1]), "eps": eps}


@rule("aten.conv2d")
def _conv2d(n):
    attrs = {"stride": _arg(n, 3, "stride", 1), "padding": _arg(n, 4, "padding", 0),
             "dilation": _arg(n, 5, "dilation", 1), "groups": int(_arg(n, 6, "groups", 1))}
    return "conv2d", _tensors(n.args[0], n.args[1], _arg(n, 2, "bias")), attrs


@rule("aten.convolution")
def _convolution(n):
    if _arg(n, 6, "transposed", False) or len(n.args[1].meta["val"].shape) != 4:
        return "conv_nd", _tensors(n.args[0], n.args[1], n.args[2]), {}  # 1-D, 3-D, transposed
    attrs = {"stride": n.args[3], "padding": n.args[4], "dilation": n.args[5], "groups": int(n.args[8])}
    return "conv2d", _tensors(n.args[0], n.args[1], n.args[2]), attrs


@rule("aten.batch_norm", "aten._native_batch_norm_legit_no_training")
def _batch_norm(n):
    # batch_norm(x, w, b, mean, var, training, momentum, eps, ...); _legit_no_training(x, w, b, mean, var, momentum, eps)
    legit = "legit" in str(n.target)
    if not legit and _arg(n, 5, "training", False):
        raise NotImplementedError("training-mode batch norm is not simulated")
    eps = _arg(n, 6 if legit else 7, "eps", 1e-5)
    return "batchnorm", _tensors(n.args[0], n.args[1], n.args[2], n.args[3], n.args[4]), {"eps": eps}


@rule("aten.max_pool2d", "aten.max_pool2d_with_indices")
def _max_pool(n):
    k = _arg(n, 1, "kernel_size")
    return "pool2d", [n.args[0]], {"kind": "max", "kernel": k, "stride": _arg(n, 2, "stride") or k,
                                   "padding": _arg(n, 3, "padding", 0), "dilation": _arg(n, 4, "dilation", 1),
                                   "ceil_mode": bool(_arg(n, 5, "ceil_mode", False))}


@rule("aten.avg_pool2d")
def _avg_pool(n):
    k = _arg(n, 1, "kernel_size")
    return "pool2d", [n.args[0]], {"kind": "avg", "kernel": k, "stride": _arg(n, 2, "stride") or k,
                                   "padding": _arg(n, 3, "padding", 0), "ceil_mode": bool(_arg(n, 4, "ceil_mode", False))}


@rule("aten.adaptive_avg_pool2d", "aten._adaptive_avg_pool2d", "aten.adaptive_max_pool2d")
def _adaptive_pool(n):
    kind = "max" if "max" in str(n.target) else "avg"
    return "pool2d", [n.args[0]], {"kind": kind, "output_size": list(n.args[1])}


@rule("aten.softmax", "aten._softmax", "aten._safe_softmax")
def _softmax(n):
    return "softmax", [n.args[0]], {"dim": n.args[1]}


@rule("aten.log_softmax", "aten._log_softmax")
def _log_softmax(n):
    return "log_softmax", [n.args[0]], {"dim": n.args[1]}


@rule("aten.addmm", "aten.baddbmm")
def _addmm(n):
    return "addmm", [n.args[0], n.args[1], n.args[2]], {}


_POINTWISE = {
    "aten.add": "add", "aten.sub": "sub", "aten.rsub": "sub", "aten.mul": "mul", "aten.div": "div",
    "aten.neg": "neg", "aten.exp": "exp", "aten.log": "log", "aten.pow": "pow", "aten.sqrt": "sqrt",
    "aten.rsqrt": "rsqrt", "aten.reciprocal": "reciprocal", "aten.abs": "abs", "aten.relu": "relu",
    "aten.gelu": "gelu", "aten.silu": "silu", "aten.sigmoid": "sigmoid", "aten.tanh": "tanh",
    "aten.sin": "sin", "aten.cos": "cos", "aten.where": "where", "aten.maximum": "maximum",
    "aten.minimum": "minimum", "aten.clamp": "clamp", "aten.clamp_min": "clamp", "aten.clamp_max": "clamp",
    "aten.hardtanh": "clamp", "aten.square": "square", "aten.eq": "eq", "aten.ne": "ne", "aten.lt": "lt",
    "aten.gt": "gt", "aten.le": "le", "aten.ge": "ge", "aten.logical_and": "logical_and",
    "aten.masked_fill": "where", "aten.leaky_relu": "relu",
    **{f"aten.{f}": f for f in (
        "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
        "fmod", "remainder", "copysign", "hypot", "floor", "ceil", "round", "trunc", "sign", "isnan", "isinf",
        "fill", "erf", "erfinv", "expm1", "log1p", "log2", "log10", "tan", "asin", "acos", "atan", "sinh", "cosh",
        "asinh", "acosh", "atanh", "atan2", "elu", "softplus", "hardswish", "hardsigmoid", "mish", "logit")},
    "aten.__and__": "bitwise_and", "aten.__or__": "bitwise_or", "aten.__xor__": "bitwise_xor",
    "aten.sgn": "sign", "aten.arcsin": "asin", "aten.arccos": "acos", "aten.arctan": "atan",
    "aten.relu6": "clamp", "aten.heaviside": "sign", "aten.lerp": "where",
}

_PREDICATES = {"eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "logical_xor", "logical_not",
               "isnan", "isinf"}


def _pointwise_rule(ir: str) -> Rule:
    def fn(n):
        attrs: dict[str, Any] = {}
        if ir in _PREDICATES:
            attrs["predicate"] = True
        return ir, _tensors(*n.args, *n.kwargs.values()), attrs

    return fn


for _aten, _ir in _POINTWISE.items():
    RULES[_aten] = _pointwise_rule(_ir)


@rule("aten._to_copy", "aten.to", "aten.type_as")
def _cast(n):
    dtype = n.meta["val"].dtype
    return "cast", [n.args[0]], {"dtype": from_torch(dtype)}


@rule("aten.sum", "aten.mean", "aten.amax", "aten.max", "aten.amin", "aten.min", "aten.prod", "aten.any",
      "aten.all", "aten.var", "aten.std", "aten.var_mean", "aten.std_mean", "aten.argmax", "aten.argmin",
      "aten.logsumexp", "aten.nansum", "aten.count_nonzero", "aten.linalg_vector_norm", "aten.aminmax")
def _reduce(n):
    kind = str(n.target.overloadpacket).split(".", 1)[1]
    dims = _arg(n, 1, "dim")
    if isinstance(dims, int):
        dims = [dims]
    return "reduce", _tensors(*n.args), {"dims": list(dims) if isinstance(dims, (list, tuple)) else None,
                                         "keepdim": bool(_arg(n, 2, "keepdim", False)), "kind": kind}


def _generic_rule(ir: str) -> Rule:
    def fn(n):
        args: list[Any] = []
        torch.fx.node.map_arg((n.args, n.kwargs), args.append)
        return ir, list(dict.fromkeys(args)), {}  # every tensor argument, once, in call order

    return fn


for _aten, _ir in ATEN_TO_GENERIC.items():
    RULES[_aten] = _generic_rule(_ir)


_VIEWS = (
    "aten.view", "aten.reshape", "aten._unsafe_view", "aten.flatten", "aten.unflatten", "aten.unsqueeze",
    "aten.squeeze", "aten.expand", "aten.transpose", "aten.t", "aten.permute", "aten.select", "aten.slice",
    "aten.split", "aten.split_with_sizes", "aten.chunk", "aten.unbind", "aten.alias", "aten.detach",
    "aten.contiguous", "aten.dropout", "aten.narrow", "aten.movedim", "aten.view_as", "aten.expand_as",
    "aten.lift_fresh_copy", "aten.tensor_split", "aten.swapaxes", "aten.as_strided", "aten.diagonal",
    "aten.unfold", "aten.split_copy", "aten.hsplit", "aten.vsplit", "aten.moveaxis",
)


def _view(n):
    return "view", [n.args[0]], {"shapes": _shapes(n)}


for _v in _VIEWS:
    RULES[_v] = _view


@rule("aten.clone", "aten.copy")
def _copy(n):
    return "copy", [n.args[0]], {}


@rule("aten.cat", "aten.concat", "aten.concatenate")
def _cat(n):
    return "concat", list(n.args[0]), {"dim": _arg(n, 1, "dim", 0)}


@rule("aten.stack")
def _stack(n):
    return "concat", list(n.args[0]), {"dim": _arg(n, 1, "dim", 0), "stack": True}


@rule("aten.index", "aten.index_select", "aten.gather", "aten.take_along_dim")
def _gather(n):
    args = []
    for a in n.args:
        args.extend(a if isinstance(a, (list, tuple)) else [a])
    return "gather", _tensors(*args), {"shape": _shapes(n)[0]}


_CONSTS = (
    "aten.arange", "aten.zeros", "aten.ones", "aten.full", "aten.empty", "aten.scalar_tensor",
    "aten.zeros_like", "aten.ones_like", "aten.full_like", "aten.empty_like", "aten.tril_indices",
    "aten.tensor", "aten.new_zeros", "aten.new_ones", "aten.new_full", "aten.new_empty", "aten.empty_strided",
    "aten.empty_permuted", "aten.linspace", "aten.eye",
)


def _const(n):
    val = n.meta["val"]
    return "const", [], {"shape": tuple(int(d) for d in val.shape), "dtype": from_torch(val.dtype)}


for _c in _CONSTS:
    RULES[_c] = _const


# ---- fused custom ops (mtiasim.frontend.custom_ops) --------------------------------------------
@rule("mtiasim.tbe")
def _tbe(n):
    return "tbe", [n.args[0], n.args[1]], {"pooling_factors": list(n.args[2]), "rows": list(n.args[3])}


@rule("mtiasim.tbe_backward")
def _tbe_backward(n):
    return "tbe_backward", [n.args[0], n.args[1], n.args[2]], {"pooling_factors": list(n.args[3]),
                                                               "rows": list(n.args[4])}


@rule("mtiasim.dcn_cross")
def _dcn(n):
    return "dcn_cross", list(n.args[:5]), {}


@rule("mtiasim.attention")
def _attention(n):  # attention(q, k, v, attn_mask, is_causal, scale, enable_gqa): training capture's SDPA
    attrs = {"causal": bool(_arg(n, 4, "is_causal", False)), "scale": _arg(n, 5, "scale")}
    return "attention", _tensors(n.args[0], n.args[1], n.args[2], _arg(n, 3, "attn_mask")), attrs


@rule("mtiasim.attention_backward")
def _attention_backward(n):  # attention_backward(dO, q, k, v, attn_mask, is_causal, scale, enable_gqa)
    attrs = {"causal": bool(_arg(n, 5, "is_causal", False)), "scale": _arg(n, 6, "scale")}
    return "attention_backward", _tensors(*n.args[:4], _arg(n, 4, "attn_mask")), attrs


@rule("mtiasim.dot_interaction")
def _dot(n):
    return "dot_interaction", list(n.args[:2]), {}


# moe_ffn is expanded by the capture into moe_router, moe_expert_up, moe_expert_down, moe_combine
RULES["mtiasim.moe_ffn"] = lambda n: ("moe_ffn", list(n.args[:5]), {"top_k": int(n.args[5])})

#: ops that are pure bookkeeping in an exported graph
IGNORED = {
    "aten._assert_async", "aten._assert_scalar", "aten.sym_size", "aten.sym_constrain_range_for_size",
    "aten._assert_tensor_metadata", "aten.sym_constrain_range", "aten.sym_numel", "aten.sym_stride",
    "aten.sym_storage_offset", "aten.sym_is_contiguous",
}

#: Core ATen ops no graph can be simulated with, and why: capture names them with this reason
UNSUPPORTED = {
    "aten.nonzero": "its output shape depends on tensor values (data-dependent shape)",
    "aten._local_scalar_dense": "reads a tensor value on the host (.item()): data-dependent control flow",
    "aten._fft_r2c": "complex tensors are not simulated",
    "aten._fft_c2r": "complex tensors are not simulated",
    "aten._fft_c2c": "complex tensors are not simulated",
}
