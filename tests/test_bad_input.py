"""Malformed syslets raise TranslateError naming the atom, op and argument."""

from __future__ import annotations

import pytest

import uringlets as ul

OTHER = ul.Syslet()
OTHER_FD = OTHER.openat("/etc/hostname")


def build_and_compile(build):
    s = ul.Syslet()
    s.nop()  # so the bad atom is atom 1
    build(s)
    s.compile()


CASES = [
    # (build, atom index, op, argument, message fragment)
    (lambda s: s.openat(42), 1, "openat", "path", "expected str, bytes"),
    (lambda s: s.openat("/x\0y"), 1, "openat", "path", "null byte"),
    (lambda s: s.openat("/x", "rb"), 1, "openat", "flags", "expected an int in 0..2147483647"),
    (lambda s: s.openat("/x", -1), 1, "openat", "flags", "out of range"),
    (lambda s: s.openat("/x", 0, 2**32), 1, "openat", "mode", "out of range"),
    (lambda s: s.openat("/x", ul.Param("f")), 1, "openat", "flags", "cannot be a Param"),
    (lambda s: s.openat("/x", dir_fd=s.openat("/")), 2, "openat", "dir_fd", "Ref cannot"),
    (lambda s: s.read("3", 10), 1, "read", "fd", "expected a descriptor"),
    (lambda s: s.read(-1, 10), 1, "read", "fd", "out of range"),
    (lambda s: s.read(True, 10), 1, "read", "fd", "expected a descriptor"),
    (lambda s: s.read(0, -1), 1, "read", "size", "out of range"),
    (lambda s: s.read(0, 1 << 40), 1, "read", "size", "out of range"),
    (lambda s: s.read(0, 10.0), 1, "read", "size", "expected a size"),
    (lambda s: s.read(0, ul.Param("n")), 1, "read", "size", "needs at_most="),
    (lambda s: s.recv(0, ul.Param("n", at_most=8)), 1, "recv", "bufsize", "cannot be a Param"),
    (lambda s: s.read(0, 10, -5), 1, "read", "offset", "out of range"),
    (lambda s: s.read(OTHER_FD, 10), 1, "read", "fd", "belongs to another syslet"),
    (lambda s: s.read(ul.Ref(s, 5, "openat"), 10), 1, "read", "fd", "used before it is defined"),
    (lambda s: s.read(s.nop(), 10), 2, "read", "fd", "is not a descriptor"),
    (lambda s: s.write(0, "text"), 1, "write", "data", "expected bytes"),
    (lambda s: s.write(0, s.openat("/x")), 2, "write", "data", "does not produce bytes"),
    (lambda s: s.write(0, b"x", 1.5), 1, "write", "offset", "non-negative offset"),
    (lambda s: s.nop(stop=64), 1, "nop", "stop", "unknown stop flags"),
    (lambda s: s.nop(stop=-1), 1, "nop", "stop", "unknown stop flags"),
    (lambda s: s.nop(stop="never"), 1, "nop", "stop", "expected a stop rule"),
    (lambda s: s.timeout(-1), 1, "timeout", "seconds", "between 0"),
    (lambda s: s.timeout(float("nan")), 1, "timeout", "seconds", "between 0"),
    (lambda s: s.timeout("1"), 1, "timeout", "seconds", "as a number"),
    (lambda s: s.fsync(0, datasync=1), 1, "fsync", "datasync", "True or False"),
    (lambda s: s.statx("/", follow_symlinks=None), 1, "statx", "follow_symlinks", "True or"),
    (lambda s: s.renameat("/a", 7), 1, "renameat", "dst", "expected str"),
]


@pytest.mark.parametrize(("build", "index", "op", "arg", "fragment"), CASES)
def test_malformed_atom_names_index_op_and_argument(build, index, op, arg, fragment):
    with pytest.raises(ul.TranslateError) as info:
        build_and_compile(build)
    err = info.value
    assert (err.index, err.op, err.argument) == (index, op, arg)
    assert f"atom {index}" in str(err) and op in str(err) and repr(arg) in str(err)
    assert fragment in str(err)
    assert isinstance(err, ValueError)


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_too_many_atoms():
    s = ul.Syslet()
    for _ in range(ul.MAX_ATOMS):
        s.nop()
    with pytest.raises(ul.TranslateError) as info:
        s.read(0, 1)
    assert info.value.index == 64 and info.value.op == "read"


def test_an_empty_syslet_does_not_compile():
    with pytest.raises(ul.TranslateError, match="at least one atom"):
        ul.Syslet().compile()


def test_export_of_a_non_descriptor():
    s = ul.Syslet()
    n = s.nop()
    with pytest.raises(ul.TranslateError, match="not a descriptor"):
        s.export(n)
    with pytest.raises(ul.TranslateError, match="not of this syslet"):
        s.export(OTHER_FD)


def test_a_param_used_as_two_kinds():
    s = ul.Syslet()
    p = ul.Param("p")
    s.openat(p)
    s.write(1, p)
    with pytest.raises(ul.TranslateError, match=r"atom 1 .*used as path"):
        s.compile()


def test_wrong_program_type_and_bad_engine_arguments(make_engine):
    with make_engine(capacity=2) as eng:
        with pytest.raises(TypeError, match="expected a Program"):
            eng.submit("not a program")
        with pytest.raises(ValueError, match="count"):
            eng.submit_many(_nop(), -1)
    with pytest.raises(ValueError, match="engine must be"):
        ul.Engine("fast")
    with pytest.raises(ValueError, match="capacity"):
        ul.Engine("uring", capacity=0)
    # the batch's place k and the batch's table entry are 16 bits of user_data each
    with pytest.raises(ValueError, match="capacity is at most 65536"):
        ul.Engine("uring", capacity=65537)


def _nop() -> ul.Program:
    s = ul.Syslet()
    s.nop()
    return s.compile()


def test_param_name_must_be_an_identifier():
    with pytest.raises(TypeError):
        ul.Param("not an identifier")
