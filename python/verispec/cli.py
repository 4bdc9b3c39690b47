"""The `verispec` command. Each subcommand lives in its own module exposing `register(subparsers)`;
the modules are imported only to build the parser, so they must stay cheap to import (no torch or
transformers at module level)."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module defining register(subparsers), which sets `func` on its parser.
SUBCOMMANDS = {
    "info": "verispec.cli",
    "demo": "verispec.demo",
    "generate": "verispec.generate_cli",
    "datastore": "verispec.datastore_cli",
}


def _info(args: argparse.Namespace) -> int:
    import platform

    import torch

    import verispec
    from verispec import _native
    from verispec._backends import backend_report

    print(f"verispec {verispec.__version__} | python {platform.python_version()} | torch {torch.__version__}")
    if _native.native_error():
        print(f"native core: MISSING ({_native.native_error()})")
    else:
        mod = _native.native()
        cuda = f"CUDA kernels for {mod.cuda_archs}" if mod.built_with_cuda else "no CUDA kernels"
        print(f"native core: {mod.__file__} ({cuda}; op families: {', '.join(mod.op_families) or 'none'})")
        if mod.built_with_cuda:
            print(f"  CUDA runtime {mod.cuda_runtime_version()}, devices visible: {mod.cuda_device_count()}")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"GPU: {gpu}")
    print(backend_report(args.device))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="show the build, the devices and what each backend can do")
    p.add_argument("--device", default=None, help="device to report for (default: cuda if present, else cpu)")
    p.set_defaults(func=_info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="verispec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for _name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # subcommand not part of this build
        module.register(sub)
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
