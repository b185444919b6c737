"""tasic-opt: parse any tasic IR level, run passes by name, print the result.

tasic-opt model.mlir -p raise-linear,tile{target=tiny} --print-between-passes
"""

from __future__ import annotations

from xdsl.xdsl_opt_main import xDSLOptMain

from tasic.ir.dialects import tasic_dialects
from tasic.passes.registry import PASSES


class TasicOptMain(xDSLOptMain):
    """xdsl-opt with exactly the tasic dialects and passes."""

    def register_all_dialects(self) -> None:
        """Load every tasic dialect."""
        for dialect in tasic_dialects():
            self.ctx.load_dialect(dialect)

    def register_all_passes(self) -> None:
        """Register the tasic pass registry."""
        for name, factory in PASSES.items():
            self.register_pass(name, factory)


def main() -> None:
    """Console entry point."""
    TasicOptMain(description="tasic modular optimizer: tasic dialects and passes").run()


if __name__ == "__main__":
    main()
