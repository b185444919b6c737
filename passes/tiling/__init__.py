"""Helpers of the tile pass: views, the kernel builder and the kernels."""
