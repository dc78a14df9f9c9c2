"""The ``mtiasim`` command line: a thin layer that parses arguments and calls the API. Each
module registers its commands on ``app``, in the order ``--help`` lists them."""

from __future__ import annotations

from importlib import import_module

from mtiasim.cli.common import app

for _module in ("simulate", "serving", "training", "planning", "validation"):
    import_module(f"mtiasim.cli.{_module}")

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
