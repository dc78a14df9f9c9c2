"""Graph IR and op registry."""

from mtiasim.graph.ir import Graph, Node, TensorSpec
from mtiasim.graph.ops import OPS, GemmShape, OpDef, OpError, Work, get_op

__all__ = ["Graph", "Node", "TensorSpec", "OPS", "GemmShape", "OpDef", "OpError", "Work", "get_op"]
