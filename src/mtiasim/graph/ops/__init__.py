"""The op registry. Importing this package registers every op."""

from mtiasim.graph.ops import attention, conv, dense, embedding, generic, host, layout, moe, pointwise  # noqa: F401  (registration)
from mtiasim.graph.ops.base import OPS, GemmShape, OpDef, OpError, Work, get_op, register_op

__all__ = ["OPS", "GemmShape", "OpDef", "OpError", "Work", "get_op", "register_op"]
