"""Triton backend: kernels and their launchers, one module per op. Imported only where triton is available."""
