"""uringlets: syslets for Python on io_uring.

Build a ``Syslet`` (a linear sequence of system calls, each with a stop
rule), ``compile()`` it once into a ``Program``, and submit it to an
``Engine`` as often as you like.  See DESIGN.md for the contract.
"""

from . import aio
from .async_engine import AsyncEngine
from .atoms import MAX_ATOMS
from .atoms.files import (
    RESOLVE_BENEATH,
    RESOLVE_IN_ROOT,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
)
from .engine import Engine, Handle, Handles
from .errors import EngineClosed, ParamError, RingFull, TranslateError
from .kernel import KernelFeatures, probe
from .notify import CallCompletion, Completion
from .program import Program
from .syslet import (
    NEVER_STOP,
    STOP_ON_NEGATIVE,
    STOP_ON_NON_POSITIVE,
    STOP_ON_NONZERO,
    STOP_ON_ZERO,
    Param,
    Ref,
    Syslet,
)

__all__ = [
    "MAX_ATOMS",
    "NEVER_STOP",
    "RESOLVE_BENEATH",
    "RESOLVE_IN_ROOT",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "RESOLVE_NO_XDEV",
    "STOP_ON_NEGATIVE",
    "STOP_ON_NONZERO",
    "STOP_ON_NON_POSITIVE",
    "STOP_ON_ZERO",
    "AsyncEngine",
    "CallCompletion",
    "Completion",
    "Engine",
    "EngineClosed",
    "Handle",
    "Handles",
    "KernelFeatures",
    "Param",
    "ParamError",
    "Program",
    "Ref",
    "RingFull",
    "Syslet",
    "TranslateError",
    "aio",
    "probe",
]
__version__ = "0.1.0"
