"""Every op: success and error results equal those of the matching os call."""

from __future__ import annotations

import errno
import os
import time

import pytest

import uringlets as ul


def os_errno(fn, *args, **kwargs) -> int:
    """-errno of an os call that must fail."""
    with pytest.raises(OSError) as info:
        fn(*args, **kwargs)
    return -info.value.errno


def one(build):
    s = ul.Syslet()
    ref = build(s)
    return s.compile(), ref


def test_nop(run):
    prog, ref = one(lambda s: s.nop())
    c = run(prog)
    assert c.ok and c.results == (0,) and c[ref] == 0


def test_openat_read_close(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    data = s.read(fd, 100)
    s.close(fd)
    c = run(s.compile())
    assert c.results == (0, 10, 0) and c[data] == b"0123456789" and c.ok


def test_openat_enoent(run, sandbox):
    prog, fd = one(lambda s: s.openat(sandbox / "missing"))
    c = run(prog)
    assert c.results == (os_errno(os.open, sandbox / "missing", os.O_RDONLY),) == (-errno.ENOENT,)
    assert c.error(fd).errno == errno.ENOENT and c.stopped_at == 0


def test_openat_enotdir(run, sandbox):
    prog, _ = one(lambda s: s.openat(sandbox / "ten" / "x"))
    assert run(prog).results == (os_errno(os.open, sandbox / "ten" / "x", 0),) == (-errno.ENOTDIR,)


def test_openat_eexist_and_create(run, sandbox):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    prog, _ = one(lambda s: s.openat(sandbox / "ten", flags, 0o600))
    assert run(prog).results == (os_errno(os.open, sandbox / "ten", flags),) == (-errno.EEXIST,)
    prog, _ = one(lambda s: s.openat(sandbox / "new", flags, 0o600))
    assert run(prog).results == (0,)
    assert (sandbox / "new").stat().st_mode & 0o777 == 0o600 & ~_umask()


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_openat_with_dir_fd(run, sandbox):
    dfd = os.open(sandbox / "dir", os.O_RDONLY | os.O_DIRECTORY)
    try:
        s = ul.Syslet()
        fd = s.openat("inner", dir_fd=dfd)
        data = s.read(fd, 10)
        c = run(s.compile())
        assert c.results == (0, 1) and c[data] == b"x"
    finally:
        os.close(dfd)


def test_read_a_directory_is_eisdir(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "dir", os.O_RDONLY | os.O_DIRECTORY)
    s.read(fd, 10)
    dfd = os.open(sandbox / "dir", os.O_RDONLY)
    try:
        expected = os_errno(os.read, dfd, 10)
    finally:
        os.close(dfd)
    assert run(s.compile()).results == (0, expected) == (0, -errno.EISDIR)


def test_read_bad_int_fd_is_ebadf(run):
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    prog, _ = one(lambda s: s.read(fd, 10))
    assert run(prog).results == (os_errno(os.read, fd, 10),) == (-errno.EBADF,)


def test_read_with_offset_and_int_fd(run, sandbox):
    fd = os.open(sandbox / "ten", os.O_RDONLY)
    try:
        prog, data = one(lambda s: s.read(fd, 4, 3))
        c = run(prog)
        assert c.results == (4,) and c[data] == os.pread(fd, 4, 3) == b"3456"
    finally:
        os.close(fd)


def test_read_at_eof_is_zero(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "empty")
    data = s.read(fd, 10)
    c = run(s.compile())
    assert c.results == (0, 0) and c[data] == b"" and c.ok


def test_write_then_read_back(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "out", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    s.write(fd, b"hello world")
    s.fsync(fd)
    s.fsync(fd, datasync=True)
    back = s.read(fd, 100, 6)
    s.close(fd)
    c = run(s.compile())
    assert c.results == (0, 11, 0, 0, 5, 0) and c[back] == b"world"
    assert (sandbox / "out").read_bytes() == b"hello world"


def test_write_to_read_only_fd_is_ebadf(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.write(fd, b"x")
    fd2 = os.open(sandbox / "ten", os.O_RDONLY)
    try:
        expected = os_errno(os.write, fd2, b"x")
    finally:
        os.close(fd2)
    assert run(s.compile()).results == (0, expected) == (0, -errno.EBADF)


def test_write_of_a_read_ref_copies_exactly_the_bytes_read(run, sandbox):
    s = ul.Syslet()
    src = s.openat(sandbox / "ten")
    dst = s.openat(sandbox / "copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    data = s.read(src, 4096)  # short: 10 bytes
    s.write(dst, data)
    s.close(src)
    s.close(dst)
    c = run(s.compile())
    assert c.results == (0, 0, 10, 10, 0, 0)
    assert (sandbox / "copy").read_bytes() == b"0123456789"


def test_fsync_bad_fd(run):
    prog, _ = one(lambda s: s.fsync(1 << 20))
    assert run(prog).results == (os_errno(os.fsync, 1 << 20),) == (-errno.EBADF,)


def test_statx_matches_os_stat(run, sandbox):
    prog, st = one(lambda s: s.statx(sandbox / "page"))
    c = run(prog)
    expected = os.stat(sandbox / "page")
    assert c.results == (0,)
    assert c[st] == expected
    assert c[st].st_size == 4096 and c[st].st_mtime_ns == expected.st_mtime_ns
    assert c[st].st_blksize == expected.st_blksize and c[st].st_blocks == expected.st_blocks


def test_statx_nofollow_and_enoent(run, sandbox):
    os.symlink(sandbox / "ten", sandbox / "link")
    prog, st = one(lambda s: s.statx(sandbox / "link", follow_symlinks=False))
    assert run(prog)[st] == os.lstat(sandbox / "link")
    prog, _ = one(lambda s: s.statx(sandbox / "missing"))
    assert run(prog).results == (os_errno(os.stat, sandbox / "missing"),) == (-errno.ENOENT,)


def test_fstat_of_a_ref_and_of_an_int(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    st = s.fstat(fd)
    s.close(fd)
    c = run(s.compile())
    assert c.results == (0, 0, 0) and c[st] == os.stat(sandbox / "ten")
    raw = os.open(sandbox / "page", os.O_RDONLY)
    try:
        prog, st = one(lambda s: s.fstat(raw))
        assert run(prog)[st] == os.fstat(raw)
    finally:
        os.close(raw)


def test_fstat_of_a_closed_ref_is_ebadf(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.close(fd)
    s.fstat(fd)
    assert run(s.compile()).results == (0, 0, -errno.EBADF)


def test_close_twice_is_ebadf(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.close(fd)
    s.close(fd)
    assert run(s.compile()).results == (0, 0, -errno.EBADF)


def test_unlinkat(run, sandbox):
    prog, _ = one(lambda s: s.unlinkat(sandbox / "ten"))
    assert run(prog).results == (0,) and not (sandbox / "ten").exists()
    assert run(prog).results == (os_errno(os.unlink, sandbox / "ten"),) == (-errno.ENOENT,)


def test_unlinkat_rmdir_enotempty_and_eisdir(run, sandbox):
    prog, _ = one(lambda s: s.unlinkat(sandbox / "dir", rmdir=True))
    assert run(prog).results == (os_errno(os.rmdir, sandbox / "dir"),) == (-errno.ENOTEMPTY,)
    prog, _ = one(lambda s: s.unlinkat(sandbox / "dir"))
    assert run(prog).results == (os_errno(os.unlink, sandbox / "dir"),) == (-errno.EISDIR,)
    prog, _ = one(lambda s: s.unlinkat(sandbox / "emptydir", rmdir=True))
    assert run(prog).results == (0,) and not (sandbox / "emptydir").exists()


def test_mkdirat(run, sandbox):
    prog, _ = one(lambda s: s.mkdirat(sandbox / "made", 0o700))
    assert run(prog).results == (0,) and (sandbox / "made").is_dir()
    assert run(prog).results == (os_errno(os.mkdir, sandbox / "made"),) == (-errno.EEXIST,)
    prog, _ = one(lambda s: s.mkdirat(sandbox / "ten" / "sub"))
    assert run(prog).results == (os_errno(os.mkdir, sandbox / "ten" / "sub"),) == (-errno.ENOTDIR,)


def test_renameat(run, sandbox):
    prog, _ = one(lambda s: s.renameat(sandbox / "ten", sandbox / "moved"))
    assert run(prog).results == (0,)
    assert (sandbox / "moved").read_bytes() == b"0123456789"
    assert run(prog).results == (os_errno(os.rename, sandbox / "ten", sandbox / "x"),)
    prog, _ = one(lambda s: s.renameat(sandbox / "emptydir", sandbox / "dir"))
    expected = os_errno(os.rename, sandbox / "emptydir", sandbox / "dir")
    assert run(prog).results == (expected,) == (-errno.ENOTEMPTY,)


def test_timeout_sleeps_and_reports_zero(run):
    prog, ref = one(lambda s: s.timeout(0.05))
    start = time.monotonic()
    c = run(prog)
    assert c.results == (0,) and c.ok and c[ref] == 0
    assert time.monotonic() - start >= 0.045


def test_timeout_in_the_middle_of_a_chain(run):
    s = ul.Syslet()
    s.nop()
    s.timeout(0.01)
    s.nop()
    assert run(s.compile()).results == (0, 0, 0)


def test_export_hands_back_a_real_fd(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    s.read(fd, 3)
    s.export(fd)
    c = run(s.compile())
    real = c[fd]
    assert isinstance(real, int) and real >= 0
    try:
        assert os.read(real, 100) == b"3456789"  # the position moved by 3
    finally:
        os.close(real)


def test_a_not_exported_descriptor_is_none(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    assert run(s.compile())[fd] is None


def test_a_completion_refuses_refs_of_other_programs(run, sandbox):
    s = ul.Syslet()
    data = s.read(s.openat(sandbox / "ten"), 3)
    _, other_ref = one(lambda s: s.nop())
    c = run(s.compile())
    with pytest.raises(KeyError):
        c[other_ref]  # atom 0 of another program, another op
    with pytest.raises(KeyError):
        c["not a ref"]
    with pytest.raises(KeyError):
        c[[data]]  # unhashable
    # the same index and op in a twin syslet: still another program's Ref
    twin = ul.Syslet()
    twin_data = twin.read(twin.openat(sandbox / "ten"), 3)
    assert (twin_data.index, twin_data.op) == (data.index, data.op)
    with pytest.raises(KeyError):
        c[twin_data]
    assert c.ok and c[data] == b"012"
    # a Ref stays valid for every program compiled from its syslet
    assert run(s.compile())[data] == b"012"


def test_results_are_an_immutable_tuple(run, sandbox):
    s = ul.Syslet()
    s.read(s.openat(sandbox / "ten"), 3)
    s.openat(sandbox / "missing")
    s.nop()
    c = run(s.compile())
    assert type(c.results) is tuple
    assert c.results == (0, 3, -errno.ENOENT, None) and c.stopped_at == 2
