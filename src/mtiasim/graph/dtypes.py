"""Element sizes of the data types the simulator knows (bytes per element, scale overhead included)."""

from __future__ import annotations

import torch

#: Bytes per element. MX formats (OCP Microscaling v1.0): 32-element blocks share an 8-bit
#: scale, so MX8 = 8.25 bits and MX4 = 4.25 bits per element. NVFP4: 16-element blocks with an
#: FP8 scale = 4.5 bits. ``fp4`` here is NVFP4-style.
BYTES_PER_ELEMENT: dict[str, float] = {
    "fp64": 8.0, "fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
    "mx8": 8.25 / 8, "mx4": 4.25 / 8, "fp4": 4.5 / 8, "int4": 0.5,
    "int64": 8.0, "int32": 4.0, "int16": 2.0, "uint8": 1.0, "bool": 1.0,
}

_FROM_TORCH = {
    torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
    torch.uint8: "uint8", torch.bool: "bool",
    torch.float8_e4m3fn: "fp8", torch.float8_e5m2: "fp8",
}

FLOAT_DTYPES = {"fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "mx8", "mx4", "fp4"}
INDEX_DTYPES = {"int64", "int32", "int16", "uint8", "bool"}


def from_torch(dtype: torch.dtype) -> str:
    try:
        return _FROM_TORCH[dtype]
    except KeyError:
        raise ValueError(f"unsupported torch dtype {dtype}") from None


def nbytes(dtype: str) -> float:
    try:
        return BYTES_PER_ELEMENT[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype '{dtype}'; known: {', '.join(BYTES_PER_ELEMENT)}") from None
