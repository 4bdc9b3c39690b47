"""CUDA backend glue: turns validated problems into the pointer/size arguments of ``verispec._C``."""
