"""Thin syscall layer: constants and ctypes wrappers with the C names, no policy.

Everything here is synchronous and importable by the zygote (no trio, no attrs).
"""
