"""Triton kernels of verispec (installed as verispec.triton_kernels). Import only where triton is available."""
