"""A system: ``COUNT`` chips of one kind in a scale-up domain, written ``CHIP:COUNT`` or as YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mtiasim.chips import ChipError, ChipSpec, load_chip


class SystemSpec(BaseModel):
    """``chip`` is a preset name or chip-file path; ``count`` chips share the chip's scale-up link."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    chip: str
    count: int = Field(ge=1)
    chip_overrides: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.chip}:{self.count}"

    def load_chip(self) -> ChipSpec:
        return load_chip(self.chip, self.chip_overrides)

    @classmethod
    def parse(cls, text: str) -> SystemSpec:
        """``"h100-sxm-80gb:8"``, ``"mtia-400"`` (one chip) or a path to a YAML SystemSpec."""
        if text.endswith((".yaml", ".yml")):
            try:
                raw = yaml.safe_load(Path(text).read_text())
                return cls.model_validate(raw)
            except OSError as e:
                raise ChipError(f"{text}: cannot read system file: {e.strerror}") from None
            except (yaml.YAMLError, ValidationError) as e:
                raise ChipError(f"{text}: invalid system description: {e}") from None
        chip, _, count = text.partition(":")
        if not chip:
            raise ChipError(f"system '{text}': expected CHIP:COUNT, e.g. h100-sxm-80gb:8")
        try:
            n = int(count) if count else 1
        except ValueError:
            raise ChipError(f"system '{text}': COUNT must be an integer, got '{count}'") from None
        if n < 1:
            raise ChipError(f"system '{text}': COUNT must be >= 1")
        return cls(chip=chip, count=n)
