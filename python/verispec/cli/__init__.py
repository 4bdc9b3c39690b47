"""The `verispec` command line (also `python -m verispec`).

Each subcommand lives in its own module of this package exposing `register(subparsers)`; the modules
are imported only to build the parser, so they stay cheap to import (no torch or transformers at
module level).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module defining register(subparsers), which sets `func` on its parser.
SUBCOMMANDS = {
    "info": "verispec.cli.info",
    "demo": "verispec.cli.demo",
    "generate": "verispec.cli.generate",
    "datastore": "verispec.cli.datastore",
    "bench": "verispec.cli.bench",
    "heads": "verispec.cli.heads",
}

DESCRIPTION = """\
verispec: lossless speculative decoding for Hugging Face causal language models.
Drafts (retrieval from a datastore, the prompt itself, a draft model) are verified by the model in one
forward pass, so the output is exactly what plain decoding produces, only faster."""

EPILOG = """\
examples:
  verispec demo --quick                       side-by-side speed and identity check on this machine
  verispec generate --prompt "def fib(n):" --check
  verispec datastore build --tokenizer model_dir --input corpus/ --out code.vsds
  verispec info                               build, devices and backends
  verispec bench --quick                      benchmark tables for this device, beside the installed peers

run `verispec COMMAND --help` for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verispec", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from verispec import __version__

    parser.add_argument("--version", action="version", version=f"verispec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        print(f"verispec {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
