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
        assert lib.ur_push(ring, images, 0, 8, ffi.NULL, 0, values, 1, 1, 0, 0, 0) == -errno.EINVAL
    finally:
        lib.ur_teardown(ring)


def test_push_adds_each_executions_user_data_base_and_reap_split_sorts_clean_endings():
    """Three runs of two linked NOPs: execution e's SQEs carry image
    user_data + ud_first + e * ud_step; ur_reap_split puts the CQEs whose
    user_data (k field cleared) equals fast_ud[batch] aside as clean, and
    describes their run."""
    from uringlets.plan import UD_BATCH_SHIFT, UD_K_SHIFT

    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 8, 0, 0) == 0
    try:
        images = ffi.new("char[]", 64 * 2)
        images[1] = bytes([lib.IOSQE_IO_LINK])  # SQE 0 links to SQE 1
        ffi.cast("uint64_t *", images + 32)[0] = 0  # SQE 0: atom 0
        ffi.cast("uint64_t *", images + 64 + 32)[0] = 1  # SQE 1: atom 1
        values = ffi.new("int64_t[3]")
        base, step = 3 << UD_BATCH_SHIFT, 1 << UD_K_SHIFT
        assert lib.ur_push(ring, images, 0, 2, ffi.NULL, 0, values, 3, 3, 0, base, step) == 3
        assert lib.ur_enter(ring, 6, -1) == 6
        fast = ffi.new("uint64_t[4]")
        fast[3] = base | 1  # atom 1 ends a clean execution of batch 3
        uds, ress = ffi.new("uint64_t[8]"), ffi.new("int32_t[8]")
        ck, cr = ffi.new("uint32_t[8]"), ffi.new("int32_t[8]")
        nclean, nruns, nposted = (ffi.new("unsigned[1]") for _ in range(3))
        runs = ffi.new("int32_t[]", lib.UR_RUN_FIELDS * 8)
        assert lib.ur_cq_ready(ring) == 6
        assert (
            lib.ur_reap_split(
                ring, fast, ffi.NULL, 4, uds, ress, ck, cr, 8, nclean, runs, nruns, nposted
            )
            == 6
        )
        # one run: batch 3, ends at 3, res 0..0, k consecutive from 0
        assert nclean[0] == 3 and nruns[0] == 1
        assert ffi.unpack(runs, lib.UR_RUN_FIELDS) == [3, 3, 0, 0, 0]
        assert lib.ur_cq_ready(ring) == 0
        assert sorted(ffi.unpack(uds, 3)) == [base | k * step for k in range(3)]
        assert ffi.unpack(ck, 3) == [0, 1, 2]
        assert ffi.unpack(cr, 3) == [0, 0, 0]
        assert (
            lib.ur_reap_split(
                ring, fast, ffi.NULL, 4, uds, ress, ck, cr, 8, nclean, runs, nruns, nposted
            )
            == 0
        )
    finally:
        lib.ur_teardown(ring)


def test_reap_split_stores_the_posted_cqes_of_a_clean_batch():
    """Three runs of two linked NOPs, atom 0 posting on the clean path:
    ur_reap_split stores its CQEs in the batch's posted results (by k),
    counts them apart, and hands Python only what is neither; a batch whose
    posted results are NULL (one of its executions left the clean path)
    gets them as others again."""
    from uringlets.plan import UD_BATCH_SHIFT, UD_K_SHIFT

    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 16, 0, 0) == 0
    try:
        images = ffi.new("char[]", 64 * 2)
        images[1] = bytes([lib.IOSQE_IO_LINK])
        ffi.cast("uint64_t *", images + 32)[0] = 0
        ffi.cast("uint64_t *", images + 64 + 32)[0] = 1
        values = ffi.new("int64_t[3]")
        base, step = 3 << UD_BATCH_SHIFT, 1 << UD_K_SHIFT
        fast = ffi.new("uint64_t[4]")
        fast[3] = base | 1
        place = ffi.new("uint8_t[256]")
        place[0] = 1  # atom 0 posts: place j = 0
        results = ffi.new("int32_t[3]", [-(2**31)] * 3)
        posted = ffi.new("struct ur_posted[4]")
        posted[3].res, posted[3].place, posted[3].width, posted[3].n = results, place, 1, 3
        uds, ress = ffi.new("uint64_t[8]"), ffi.new("int32_t[8]")
        ck, cr = ffi.new("uint32_t[8]"), ffi.new("int32_t[8]")
        nclean, nruns, nposted = (ffi.new("unsigned[1]") for _ in range(3))
        runs = ffi.new("int32_t[]", lib.UR_RUN_FIELDS * 8)
        for stored in (True, False):
            if not stored:
                posted[3].res = ffi.NULL
            assert lib.ur_push(ring, images, 0, 2, ffi.NULL, 0, values, 3, 3, 0, base, step) == 3
            assert lib.ur_enter(ring, 6, -1) == 6
            got = lib.ur_reap_split(
                ring, fast, posted, 4, uds, ress, ck, cr, 8, nclean, runs, nruns, nposted
            )
            assert got == 6 and nclean[0] == 3
            if stored:
                assert nposted[0] == 3 and ffi.unpack(results, 3) == [0, 0, 0]
            else:
                assert nposted[0] == 0
                assert sorted(ffi.unpack(uds, 3)) == [base | k * step for k in range(3)]
    finally:
        lib.ur_teardown(ring)


def test_reap_split_cuts_interleaved_batches_into_runs():
    """Single NOPs of batches 1 and 2 interleaved (1, 1, 2, 1, 2, 2) and
    one of batch 1 with another generation (a stale one): four runs, each with its own batch, end,
    lowest and highest result and k0 (or -1 where its k are not
    consecutive); the stale CQE goes with the others."""
    from uringlets.plan import UD_BATCH_SHIFT, UD_GEN_SHIFT, UD_K_SHIFT

    order = [(1, 0), (1, 1), (2, 5), (1, 3), (2, 6), (2, 4), (7, 0)]
    ring = ffi.new("struct ur_ring *")
    assert lib.ur_setup(ring, 8, 0, 0) == 0
    try:
        image = ffi.new("char[]", 64)  # a NOP, atom 0
        values = ffi.new("int64_t[1]")
        fast = ffi.new("uint64_t[8]")
        for b in (1, 2):
            fast[b] = 1 << UD_GEN_SHIFT | b << UD_BATCH_SHIFT
        for b, k in order:
            gen, b = (2, 1) if b == 7 else (1, b)  # 7: batch 1, generation 2
            ud = gen << UD_GEN_SHIFT | b << UD_BATCH_SHIFT | k << UD_K_SHIFT
            assert lib.ur_push(ring, image, 0, 1, ffi.NULL, 0, values, 1, 1, 0, ud, 0) == 1
        assert lib.ur_enter(ring, len(order), -1) == len(order)
        uds, ress = ffi.new("uint64_t[8]"), ffi.new("int32_t[8]")
        ck, cr = ffi.new("uint32_t[8]"), ffi.new("int32_t[8]")
        nclean, nruns, nposted = (ffi.new("unsigned[1]") for _ in range(3))
        runs = ffi.new("int32_t[]", lib.UR_RUN_FIELDS * 8)
        assert (
            lib.ur_reap_split(
                ring, fast, ffi.NULL, 8, uds, ress, ck, cr, 8, nclean, runs, nruns, nposted
            )
            == 7
        )
        assert nclean[0] == 6 and nruns[0] == 4
        assert ffi.unpack(ck, 6) == [0, 1, 5, 3, 6, 4]
        got = ffi.unpack(runs, lib.UR_RUN_FIELDS * 4)
        assert [got[i : i + 5] for i in range(0, 20, 5)] == [
            [1, 2, 0, 0, 0],
            [2, 3, 0, 0, 5],
            [1, 4, 0, 0, 3],
            [2, 6, 0, 0, -1],  # k 6 then 4: not consecutive
        ]
        assert ffi.unpack(uds, 1) == [2 << UD_GEN_SHIFT | 1 << UD_BATCH_SHIFT]
    finally:
        lib.ur_teardown(ring)


def test_string_starts_finds_each_packed_string_and_counts_every_nul():
    from array import array

    blob = b"ab\0\0cde\0"  # "ab", "", "cde"
    starts = array("q", [0]) * 3
    assert lib.ur_string_starts(blob, len(blob), 1000, ffi.from_buffer("int64_t[]", starts), 3) == 3
    assert list(starts) == [1000, 1003, 1004]
    # a NUL inside a string shows as one NUL too many; only n starts are written
    blob = b"a\0b\0c\0"
    starts = array("q", [-1]) * 2
    assert lib.ur_string_starts(blob, len(blob), 0, ffi.from_buffer("int64_t[]", starts), 2) == 3
    assert list(starts) == [0, 2]
    assert lib.ur_string_starts(b"", 0, 0, ffi.from_buffer("int64_t[]", starts), 2) == 0
