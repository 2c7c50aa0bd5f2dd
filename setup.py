"""Only wires the cffi extension; metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["uringlets/_ring_build.py:ffibuilder"], zip_safe=False)
