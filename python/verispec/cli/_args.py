"""Argument types that check values while the command line is parsed, so a bad value is one line and
exit status 2 before any model or file is loaded. Cheap to import (no torch).

Each type raises `argparse.ArgumentTypeError`; argparse prefixes the option name (``argument
--max-new-tokens: must be >= 1, got 0``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from verispec import _params


class UserError(Exception):
    """A mistake in what the user asked for (a path, a value, a device): printed as one line, exit 2."""


def _int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        raise ValueError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {text!r}") from None


def _option(convert, check):
    """An argparse type: convert the text, then run a `verispec._params` check (the rules `generate` and
    `verify` apply). The message drops the parameter's own name: argparse names the option."""

    def parse(text: str):
        try:
            return check(convert(text))
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            _, sep, rest = msg.partition(" must ")
            raise argparse.ArgumentTypeError("must " + rest if sep else msg) from None

    return parse


positive_int = _option(_int, lambda v: _params.check_int(v, "value", low=1))
nonnegative_int = _option(_int, lambda v: _params.check_int(v, "value", low=0))
temperature = _option(_float, _params.check_temperature)
top_p = _option(_float, _params.check_top_p)
top_k = _option(_int, _params.check_top_k)
seed = _option(_int, _params.check_seed)


def input_file(text: str) -> str:
    """A readable regular file, or ``-`` for stdin."""
    if text == "-":
        return text
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: does not exist")
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return text


def input_path(text: str) -> str:
    """A readable file or directory (walked by the caller)."""
    p = Path(text).expanduser()
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: does not exist")
    if not os.access(p, os.R_OK | (os.X_OK if p.is_dir() else 0)):
        raise argparse.ArgumentTypeError(f"{text}: not readable (permission denied)")
    return text


def output_file(text: str) -> str:
    """A file that can be created or replaced: not a directory, in an existing writable directory."""
    p = Path(text).expanduser()
    if text.endswith(os.sep) or p.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"{text}: exists and is not writable")
    return text
