"""A workload mix (``mtiasim fleet mix.yaml``): the workloads with their traffic and targets, the
chips on offer, supply caps and the objective. Schema-checked; an error names the file, the line
and the field."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mtiasim.units import UnitError, parse_quantity

Objective = Literal["tco", "power", "carbon"]


class MixError(ValueError):
    """A mix file is wrong; the message names the file, line and field."""


def _seconds(v: Any) -> Any:
    """``60ms``, ``2 s``, ``1 day`` or a number of seconds."""
    if v is None or isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    try:
        return parse_quantity(v, "s")
    except UnitError as e:
        raise ValueError(str(e)) from None


class _Workload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for k, v in data.items():
                if isinstance(k, str) and k.endswith("_s"):
                    try:
                        data[k] = _seconds(v)
                    except ValueError as e:
                        raise ValueError(f"{k}: {e}") from None
        return data

    @model_validator(mode="after")
    def _finite(self) -> _Workload:
        for k, v in self.model_dump().items():
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{k} must be a finite number, got {v}")
        return self


class RankingWorkload(_Workload):
    """A batched model served under a p99 query-latency target (DLRM-style ranking, BERT, ResNet)."""

    kind: Literal["ranking"]
    qps: float = Field(gt=0, description="queries per second")
    p99_s: float = Field(gt=0)


class LLMWorkload(_Workload):
    """An LLM served under p99 time-to-first-token and time-per-output-token targets."""

    kind: Literal["llm"]
    qps: float = Field(gt=0, description="requests per second")
    ttft_p99_s: float = Field(gt=0)
    tpot_p99_s: float = Field(gt=0)
    requests: int = Field(default=300, ge=10, description="requests simulated per candidate system")


class TrainingWorkload(_Workload):
    """A training job that must reach ``samples`` samples within ``deadline_s``."""

    kind: Literal["training"]
    samples: float = Field(gt=0, description="samples to converge")
    deadline_s: float = Field(gt=0)
    global_batch: int = Field(ge=1)
    micro_batch: int | None = Field(default=None, ge=1, description="per rank (default: global / DP); fixing it "
                                    "lets every candidate system reuse one captured training graph")
    seq_len: int | None = Field(default=None, ge=1)
    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    zero_stage: int = Field(default=1, ge=0, le=3)


Workload = Annotated[RankingWorkload | LLMWorkload | TrainingWorkload, Field(discriminator="kind")]
KINDS = ("ranking", "llm", "training")


class Mix(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    chips: list[str] = Field(min_length=1, description="chip presets on offer")
    objective: Objective = "tco"
    caps: dict[str, int] = Field(default_factory=dict, description="most chips of a type the fleet may use")
    max_chips: int = Field(default=4096, ge=1, description="largest system tried for one workload")
    workloads: list[Workload] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Mix:
        names = [w.name for w in self.workloads]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"workload names must be unique; repeated: {', '.join(dup)}")
        for chip, n in self.caps.items():
            if chip not in self.chips:
                raise ValueError(f"caps names {chip}, which is not in chips")
            if n < 0:
                raise ValueError(f"caps.{chip} must not be negative, got {n}")
        return self


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at ``loc`` (pydantic's error path), or of its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
        if child is None:
            if key in KINDS:  # the discriminator's tag in pydantic's path, not a YAML key
                continue
            break
        node, line = child, child.start_mark.line + 1
    return line


def load_mix(path: str | Path) -> Mix:
    """Read and check a mix file; chips and models are checked against the presets and the zoo."""
    from mtiasim.chips import list_chips
    from mtiasim.frontend import zoo

    where = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise MixError(f"{where}: cannot read mix file: {e.strerror}") from None
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MixError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise MixError(f"{where}: a mix file must be a YAML mapping with chips and workloads")
    try:
        mix = Mix.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = tuple(err["loc"])
            field = ".".join(str(p) for p in loc if p not in KINDS) or "<top>"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            elif err["type"] == "missing":
                msg = "required field is missing"
            lines.append(f"{where}:{_line_of(node, loc)}: {field}: {msg}")
        raise MixError("\n".join(lines)) from None
    known = set(list_chips())
    for i, chip in enumerate(mix.chips):
        if chip not in known:
            raise MixError(f"{where}:{_line_of(node, ('chips', i))}: chips[{i}]: unknown chip '{chip}'; "
                           f"presets: {', '.join(sorted(known))}")
    for i, w in enumerate(mix.workloads):
        try:
            entry = zoo.get(w.model)
        except KeyError as e:
            raise MixError(f"{where}:{_line_of(node, ('workloads', i, 'model'))}: workloads[{i}].model: "
                           f"{e.args[0]}") from None
        family_ok = {"llm": entry.family == "llm", "ranking": entry.family != "llm", "training": True}[w.kind]
        if not family_ok:
            raise MixError(f"{where}:{_line_of(node, ('workloads', i, 'kind'))}: workloads[{i}].kind: "
                           f"{w.model} is {'an LLM: use kind llm' if entry.family == 'llm' else 'not an LLM'}")
    return mix
