"""The native core must stay torch-free (one wheel for every torch version) and, where nvcc exists at
build time, must carry the CUDA kernels compiled for the requested architectures."""

import os
import shutil
import struct
import subprocess

import pytest

from verispec import _native

_C = _native.native()


def _needed_libraries(path: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


@pytest.mark.skipif(shutil.which("readelf") is None, reason="readelf (binutils) is not installed")
def test_native_module_does_not_link_torch():
    needed = _needed_libraries(_C.__file__)
    assert needed, "readelf found no NEEDED entries: not an ELF shared object?"
    torchy = [lib for lib in needed if any(k in lib for k in ("torch", "c10", "caffe2"))]
    assert not torchy, f"verispec._C links torch libraries {torchy}; it must only take pointers"
    # The CUDA runtime is linked statically, so the module loads on machines without CUDA installed.
    assert not [lib for lib in needed if lib.startswith("libcudart")], needed


def test_native_module_has_no_torch_symbols():
    with open(_C.__file__, "rb") as f:
        blob = f.read()
    for marker in (b"c10::", b"at::Tensor", b"_ZN3c10", b"_ZN2at6Tensor"):
        assert marker not in blob, f"found torch symbol marker {marker!r} in {_C.__file__}"


def test_build_facts_are_exposed():
    assert isinstance(_C.built_with_cuda, bool)
    assert isinstance(list(_C.op_families), list)
    if _C.built_with_cuda:
        assert _C.cuda_archs
        assert _C.cuda_runtime_version() >= 12000
        assert _C.cuda_device_count() >= 0


@pytest.mark.skipif(os.environ.get("VERISPEC_CUDA", "").upper() != "ON", reason="VERISPEC_CUDA=ON not requested")
def test_cuda_kernels_were_compiled_when_required():
    assert _C.built_with_cuda, "VERISPEC_CUDA=ON but the module was built without CUDA kernels"


def _fatbin_archs(so_path: str, tmp_path) -> set[tuple[int, int]]:
    """(kind, arch) of every entry of the module's .nv_fatbin section; kind 1 = PTX, 2 = cubin.

    Parsed by hand because the CI image has nvcc but not cuobjdump.
    """
    section = tmp_path / "fatbin.bin"
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", so_path, str(section)], check=True)
    blob = section.read_bytes()
    found, off = set(), 0
    while off + 16 <= len(blob):
        magic, _version, header_size, size = struct.unpack_from("<IHHQ", blob, off)
        if magic != 0xBA55ED50:
            off += 8
            continue
        entry, end = off + header_size, off + header_size + size
        while entry < end:
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", blob, entry)
            (arch,) = struct.unpack_from("<I", blob, entry + 28)
            found.add((kind, arch))
            entry += entry_header + entry_size
        off = end
    return found


@pytest.mark.skipif(shutil.which("objcopy") is None, reason="objcopy (binutils) is not installed")
def test_cuda_binaries_cover_requested_architectures(tmp_path):
    if not _C.built_with_cuda:
        pytest.skip("built without CUDA kernels")
    entries = _fatbin_archs(_C.__file__, tmp_path)
    for arch in _C.cuda_archs.split(","):
        assert (2, int(arch)) in entries, f"no sm_{arch} cubin in {_C.__file__}: {sorted(entries)}"
