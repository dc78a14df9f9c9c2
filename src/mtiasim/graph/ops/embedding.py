"""Sparse ops: embedding lookups read random rows of large tables (``Work.gather``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtiasim.graph.dtypes import nbytes
from mtiasim.graph.ir import TensorSpec
from mtiasim.graph.ops.base import OpDef, Work, register_op


@register_op
class Embedding(OpDef):
    """table [V, D], ids [...] -> [..., D]; reads one D-row per id."""

    name = "embedding"
    engine = "memory"

    def infer(self, inputs, attrs):
        table, ids = inputs
        return [TensorSpec((*ids.shape, table.shape[1]), table.dtype)]

    def work(self, inputs, outputs, attrs):
        table, ids = inputs
        row = table.shape[1] * nbytes(table.dtype)
        return Work(bytes_read={"in0": ids.numel * row, "in1": ids.nbytes},
                    bytes_written={"out0": outputs[0].nbytes}, gather={"in0": row})

    def reference(self, table, ids, **_):
        return F.embedding(ids, table)


@register_op
class EmbeddingBag(OpDef):
    """weight [V, D], indices [L], offsets [B(+1)], optional per_sample_weights [L] -> [B, D].
    Reads L rows and does L*D adds (plus L*D multiplies with per-sample weights)."""

    name = "embedding_bag"
    engine = "memory"

    def infer(self, inputs, attrs):
        weight, indices, offsets = inputs[:3]
        if len(indices.shape) != 1:
            raise self.fail(f"indices must be 1-D with offsets, got {list(indices.shape)}")
        bags = offsets.shape[0] - (1 if attrs.get("include_last_offset") else 0)
        return [TensorSpec((bags, weight.shape[1]), weight.dtype)]

    def work(self, inputs, outputs, attrs):
        weight, indices = inputs[0], inputs[1]
        lookups, d = indices.shape[0], weight.shape[1]
        row = d * nbytes(weight.dtype)
        read = {"in0": lookups * row}
        read.update({f"in{i}": t.nbytes for i, t in enumerate(inputs) if i > 0})
        weighted = len(inputs) > 3
        return Work(vector_flops=lookups * d * (2 if weighted else 1), bytes_read=read,
                    bytes_written={"out0": outputs[0].nbytes}, gather={"in0": row})

    def reference(self, weight, indices, offsets, per_sample_weights=None, mode="sum", include_last_offset=False, **_):
        return F.embedding_bag(indices, weight, offsets, mode=mode, per_sample_weights=per_sample_weights,
                               include_last_offset=include_last_offset)


@register_op
class TableBatchedEmbedding(OpDef):
    """FBGEMM-style TBE: indices [B, sum(P)], stacked tables [sum(rows), D] -> [B, T, D].
    Attributes ``pooling_factors`` (P_t, lookups per sample in table t) and ``rows``."""

    name = "tbe"
    engine = "memory"

    def infer(self, inputs, attrs):
        indices, weights = inputs
        pf, rows = attrs["pooling_factors"], attrs["rows"]
        if indices.shape[1] != sum(pf):
            raise self.fail(f"indices have {indices.shape[1]} columns, pooling factors sum to {sum(pf)}")
        if weights.shape[0] != sum(rows):
            raise self.fail(f"stacked tables have {weights.shape[0]} rows, table rows sum to {sum(rows)}")
        return [TensorSpec((indices.shape[0], len(pf), weights.shape[1]), weights.dtype)]

    def work(self, inputs, outputs, attrs):
        indices, weights = inputs
        b, lookups, d = indices.shape[0], indices.shape[1], weights.shape[1]
        row = d * nbytes(weights.dtype)
        return Work(vector_flops=float(b * lookups * d),
                    bytes_read={"in0": indices.nbytes, "in1": b * lookups * row},
                    bytes_written={"out0": outputs[0].nbytes}, gather={"in1": row})

    def reference(self, indices, weights, pooling_factors, rows, **_):
        outs, col, row0 = [], 0, 0
        for pf, n in zip(pooling_factors, rows):
            outs.append(weights[indices[:, col : col + pf] + row0].sum(dim=1))
            col += pf
            row0 += n
        return torch.stack(outs, dim=1)


@register_op
class TableBatchedEmbeddingBackward(OpDef):
    """FBGEMM's fused TBE backward with the optimizer: grad_out [B, T, D], indices [B, sum(P)],
    tables [sum(rows), D] -> the updated tables (in place). For every lookup the row's gradient
    (a D-slice of grad_out) is applied with rowwise Adagrad (one fp32 accumulator per row,
    FBGEMM's EXACT_ROWWISE_ADAGRAD): read the row and its accumulator, write both back. About
    4 flops per element (accumulate, square-sum, scale, update). Duplicate indices in a batch,
    which FBGEMM merges after sorting, are rare for lookups spread over tables this large."""

    name = "tbe_backward"
    engine = "memory"

    def infer(self, inputs, attrs):
        return [TensorSpec(inputs[2].shape, inputs[2].dtype)]

    def work(self, inputs, outputs, attrs):
        grad, indices, weights = inputs
        b, lookups, d = indices.shape[0], indices.shape[1], weights.shape[1]
        row = d * nbytes(weights.dtype) + 4.0  # the row and its rowwise-Adagrad accumulator
        touched = b * lookups * row
        return Work(vector_flops=4.0 * b * lookups * d,
                    bytes_read={"in0": grad.nbytes, "in1": indices.nbytes, "in2": touched},
                    bytes_written={"out0": touched}, gather={"in2": row})

    def reference(self, grad_out, indices, weights, pooling_factors, rows, **_):
        """The table's gradient (a dense scatter-add); the optimizer step is not applied here."""
        grad, col, row0 = torch.zeros_like(weights), 0, 0
        for t, (pf, n) in enumerate(zip(pooling_factors, rows)):
            idx = indices[:, col : col + pf] + row0
            grad.index_add_(0, idx.reshape(-1), grad_out[:, t].repeat_interleave(pf, dim=0))
            col += pf
            row0 += n
        return grad
