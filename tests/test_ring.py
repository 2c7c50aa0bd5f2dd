"""Smoke tests of the cffi ring layer and of the build script's constants."""

from __future__ import annotations

import errno

import pytest
from uringlets._ring import ffi, lib

from uringlets import _ring_build, kernel


def test_one_constant_and_one_call():
    assert lib.IORING_OP_NOP == 0
    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 4, 0, 0) == 0
    try:
        assert ring.fd >= 0 and ring.sq_entries == 4
        assert lib.ur_sq_space(ring) == 4
    finally:
        lib.ur_teardown(ring)
    assert ring.fd == -1
    lib.ur_teardown(ring)  # twice is harmless


@pytest.mark.parametrize("name", _ring_build.CONSTANTS)
def test_every_declared_constant_is_compiled_in(name):
    assert isinstance(getattr(lib, name), int)


@pytest.mark.parametrize(
    ("name", "number"),
    [("FIXED_FD_INSTALL", 54), ("FTRUNCATE", 55), ("BIND", 56), ("LISTEN", 57)],
)
def test_opcodes_newer_than_the_header_have_their_abi_numbers(name, number):
    assert kernel.opcode(name) == number


def test_setup_refuses_bad_flags_with_negative_errno():
    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 4, 0, 1 << 31) == -errno.EINVAL
    assert ring.fd == -1


def test_probe_reports_the_ops_we_use():
    features = kernel.probe()
    assert features.available, features.reason
    for op in ("NOP", "OPENAT", "READ", "CLOSE", "FIXED_FD_INSTALL"):
        assert features.has_op(op)
    assert not features.without_ops(["READ"]).has_op("READ")


def test_push_refuses_a_run_longer_than_the_ring():
    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 4, 0, 0) == 0
    try:
        images = ffi.new("char[]", 64 * 8)
        values = ffi.new("int64_t[1]")
        assert lib.ur_push(ring, images, 0, 8, ffi.NULL, 0, values, 1, 1, 0) == -errno.EINVAL
    finally:
        lib.ur_teardown(ring)
