"""The `verispec` command line (also `python -m verispec`).

Each subcommand lives in its own module of this package exposing `register(subparsers)`; the modules
are imported only to build the parser, so they stay cheap to import (no torch or transformers at
module level).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from verispec.cli._args import UserError

__all__ = ["main", "build_parser", "user_error", "UserError", "SUBCOMMANDS"]

# subcommand -> module defining register(subparsers), which sets `func` on its parser.
SUBCOMMANDS = {
    "info": "verispec.cli.info",
    "demo": "verispec.cli.demo",
    "generate": "verispec.cli.generate",
    "edit": "verispec.cli.edit",
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
  verispec edit utils.py -i "Add type hints." --check   fast apply: the file is the prediction
  verispec datastore build --tokenizer model_dir --input corpus/ --out code.vsds
  verispec info                               build, devices and backends
  verispec bench --quick                      benchmark tables for this device, beside the installed peers

run `verispec COMMAND --help` for a command's options."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``verispec generate: error: argument --top-p: must be in (0, 1]``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="verispec", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from verispec import __version__

    parser.add_argument("--version", action="version", version=f"verispec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        importlib.import_module(module_name).register(sub)
    return parser


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an exception that is the user's to fix, or None for a bug (which keeps
    its traceback). Files: the OS's reason and the path. Values: the exception's own message, whose
    first line names the value (library messages may run to several lines)."""
    if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
        if exc.filename is not None and exc.strerror:
            return f"{exc.filename}: {exc.strerror}"
        text = str(exc)
    elif isinstance(exc, (UserError, ValueError, TypeError, RuntimeError)):
        text = str(exc)
    else:
        return None
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def _quiet_stdout() -> None:
    """After a broken pipe (``verispec ... | head``) nothing more can reach the reader: point stdout at
    /dev/null so the interpreter's final flush does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: the command's (0 = success), 2 for a user error (one line on
    stderr naming the path or value; set VERISPEC_TRACEBACK=1 for the traceback), 130 on Ctrl-C, 141
    (128 + SIGPIPE, as coreutils) when the reader of stdout went away."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed as one line
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a broken pipe surfaces here, inside the handler, not at exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 141
    except Exception as exc:
        msg = user_error(exc)
        if msg is None or os.environ.get("VERISPEC_TRACEBACK", "") not in ("", "0"):
            raise
        print(f"verispec {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
