"""`verispec info`: the build, the devices, and what each backend can do here (and why not)."""

from __future__ import annotations

import argparse


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
