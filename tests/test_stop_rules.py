"""Semantics rules 1-4: order, stop rules, sequential results, Refs."""

from __future__ import annotations

import errno
import os

import pytest

import uringlets as ul

from .conftest import ALL_RULES

RULES = ALL_RULES
# (file to read, the read's result): negative, zero and positive.
CASES = {"negative": ("dir", -errno.EISDIR), "zero": ("empty", 0), "positive": ("ten", 10)}


def holds(rule: int, r: int) -> bool:
    return (
        (rule & ul.STOP_ON_NEGATIVE and r < 0)
        or (rule & ul.STOP_ON_NONZERO and r != 0)
        or (rule & ul.STOP_ON_ZERO and r == 0)
        or (rule & ul.STOP_ON_NON_POSITIVE and r <= 0)
    )


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_2_every_stop_rule_on_every_sign(run, sandbox, rule, case):
    name, result = CASES[case]
    s = ul.Syslet()
    fd = s.openat(sandbox / name)
    s.read(fd, 100, stop=rule)
    s.nop()
    s.close(fd)
    c = run(s.compile())
    if holds(rule, result):
        assert c.results == (0, result, None, None) and c.stopped_at == 1 and not c.ok
    else:
        assert c.results == (0, result, 0, 0) and c.stopped_at is None and c.ok


@pytest.mark.parametrize("rule", RULES)
def test_rule_2_stop_rules_on_ops_that_succeed_with_zero(run, sandbox, rule):
    s = ul.Syslet()
    s.mkdirat(sandbox / "d", stop=rule)
    s.mkdirat(sandbox / "d", stop=rule)  # EEXIST
    s.nop()
    c = run(s.compile())
    expected = (0, -errno.EEXIST, 0)
    for i, r in enumerate(expected):
        if holds(rule, r):
            assert c.stopped_at == i
            assert c.results == expected[: i + 1] + (None,) * (len(expected) - i - 1)
            break
    else:
        assert c.results == expected and c.ok


def test_rule_3_a_short_read_mid_chain_resumes_with_sequential_results(run, sandbox):
    # The kernel breaks the link at the short read; the engine resumes.
    s = ul.Syslet()
    fd = s.openat(sandbox / "ten")
    first = s.read(fd, 4)
    second = s.read(fd, 4096)  # short: 6 bytes, breaks the kernel link
    third = s.read(fd, 4096, stop=ul.NEVER_STOP)  # 0: EOF
    s.nop()
    s.close(fd)
    prog = s.compile()
    c = run(prog)
    assert c.results == (0, 4, 6, 0, 0, 0) and c.ok
    assert (c[first], c[second], c[third]) == (b"0123", b"456789", b"")


def test_rule_3_a_zero_byte_recv_like_result_is_not_an_error(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "empty")
    s.read(fd, 10, stop=ul.STOP_ON_NEGATIVE)
    s.close(fd)
    c = run(s.compile())
    assert c.ok and c.results == (0, 0, 0)


def test_rule_1_atoms_run_in_order(run, sandbox):
    target = sandbox / "ordered"
    s = ul.Syslet()
    s.mkdirat(target)
    s.mkdirat(target / "a")
    fd = s.openat(target / "a" / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    s.write(fd, b"1")
    s.close(fd)
    s.renameat(target / "a" / "f", target / "g")
    s.unlinkat(target / "a", rmdir=True)
    c = run(s.compile())
    assert c.ok and c.results == (0, 0, 0, 1, 0, 0, 0)
    assert sorted(os.listdir(target)) == ["g"]


def test_rule_4_fd_ref_feeds_later_atoms_and_closed_ref_is_ebadf(run, sandbox):
    s = ul.Syslet()
    a = s.openat(sandbox / "ten")
    b = s.openat(sandbox / "page")
    ra = s.read(a, 2)
    rb = s.read(b, 2)
    s.close(a)
    late = s.read(a, 2, stop=ul.NEVER_STOP)
    s.close(b)
    c = run(s.compile())
    assert c.results == (0, 0, 2, 2, 0, -errno.EBADF, 0)
    assert c[ra] == b"01" and c[rb] == b"\x00\x01" and c[late] is None


def test_a_64_atom_chain_runs(run):
    s = ul.Syslet()
    for _ in range(ul.MAX_ATOMS):
        s.nop()
    c = run(s.compile())
    assert c.ok and c.results == (0,) * 64


def test_a_64_atom_chain_through_a_ring_of_8_entries(make_engine, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "page")
    for _ in range(62):
        s.read(fd, 64)
    s.close(fd)
    prog = s.compile()
    with make_engine(capacity=4, sq_entries=8) as eng:
        c = eng.run(prog)
    assert c.ok and c.results == (0,) + (64,) * 62 + (0,)


def test_65_atoms_raise_translate_error():
    s = ul.Syslet()
    for _ in range(64):
        s.nop()
    with pytest.raises(ul.TranslateError, match=r"atom 64 .*at most 64"):
        s.nop()


def test_never_stop_continues_after_errors(run, sandbox):
    s = ul.Syslet()
    fd = s.openat(sandbox / "missing", stop=ul.NEVER_STOP)
    s.read(fd, 10, stop=ul.NEVER_STOP)
    s.close(fd, stop=ul.NEVER_STOP)
    s.nop()
    c = run(s.compile())
    assert c.results == (-errno.ENOENT, -errno.EBADF, -errno.EBADF, 0) and c.ok
