"""Shared pieces of the command line: the Typer apps, consoles, option help, error and output helpers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate PyTorch models on MTIA accelerators and reference GPUs.")
chips_app = typer.Typer(invoke_without_command=True, help="List chip presets, or show one with its sources.")
app.add_typer(chips_app, name="chips")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

SET_HELP = "Override a chip field, e.g. --set dram.bandwidth_bytes_per_s=3e12 or --set power.tdp_w=alt:blog-2024"
COST_HELP = ("Override a cost or site parameter (data/fleet/site.yaml), e.g. --cost energy_usd_per_kwh=0.12, "
             "--cost utilisation=alt:high; the chip's price is --set cost.capex_usd=USD")



def _overrides(items: list[str] | None, option: str = "--set") -> dict[str, str]:
    res = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"{option} {it!r}: expected PATH=VALUE")
        k, v = it.split("=", 1)
        res[k.strip()] = v.strip()
    return res


def _fail(e: Exception) -> None:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):  # our validators' own messages name the field
        e = ValueError("; ".join(d["msg"].removeprefix("Value error, ") for d in e.errors()))
    err.print(f"[red]error:[/red] {e}", highlight=False)
    raise typer.Exit(2)


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as None: JSON has no literal for them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _dump(obj: Any) -> None:
    """``--json`` output: valid JSON (non-finite numbers become null)."""
    sys.stdout.write(json.dumps(_finite(obj), indent=2, default=str, allow_nan=False) + "\n")


def _print(table: Any, notes: list[str]) -> None:
    """A result's table, then its notes."""
    out.print(table)
    for n in notes:
        out.print(f"[yellow]note:[/yellow] {n}", highlight=False)


def _progress(total: int) -> Any:
    """A rich progress bar on stderr; yields a callable that advances it with a description."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    @contextmanager
    def bar():  # noqa: ANN202
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, transient=True) as p:
            task = p.add_task("working", total=total)
            started = 0

            def step(desc: str, completed: int | None = None, new_total: int | None = None) -> None:
                """Describe the item now starting (counting the ones before it as done), or set
                ``completed`` of ``new_total`` outright."""
                nonlocal started
                if completed is None:
                    completed, started = started, started + 1
                p.update(task, description=desc, completed=completed, total=new_total or p.tasks[0].total)

            yield step
    return bar()
