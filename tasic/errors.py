"""User-facing error types: the CLI prints these as one line, never a traceback."""

from __future__ import annotations


class UsageError(Exception):
    """A bad command-line argument or input file."""


def _user_errors() -> tuple[type[Exception], ...]:
    from tasic.backend.asm import AsmError
    from tasic.backend.target import TargetError
    from tasic.backend.tbin import TbinError
    from tasic.compiler import CompileError
    from tasic.frontend.errors import FrontendError
    from tasic.isa_sim.errors import SimError

    return (UsageError, AsmError, TargetError, TbinError, CompileError, FrontendError, SimError)


USER_ERRORS = _user_errors()
