"""Every dialect tasic knows, for tasic-opt and the compile driver."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin
from xdsl.dialects.func import Func
from xdsl.ir import Dialect


def tasic_dialects() -> list[Dialect]:
    """The dialects of every IR level, graph to instructions."""
    from tasic.ir.isa import Isa
    from tasic.ir.tfm import Tfm
    from tasic.ir.tile import Tile

    return [Builtin, Func, Arith, Tfm, Tile, Isa]


def tasic_context() -> Context:
    """A context with every tasic dialect loaded."""
    ctx = Context()
    for dialect in tasic_dialects():
        ctx.load_dialect(dialect)
    return ctx
