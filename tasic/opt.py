"""tasic-opt: parse any tasic IR level, run passes by name, print the result.

tasic-opt model.mlir -p raise-linear,tile{target=tiny} --print-between-passes
"""

from __future__ import annotations

import sys

from xdsl.utils.exceptions import ArgSpecParseError, DiagnosticException, ParseError
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
    """Console entry point: bad IR, files, pass names or options end in one `error:` line, exit status 1."""
    from tasic.errors import USER_ERRORS
    from tasic.passes.registry import pass_errors

    user_errors = (ParseError, DiagnosticException, ArgSpecParseError, OSError, ValueError, *USER_ERRORS)
    try:
        TasicOptMain(description="tasic modular optimizer: tasic dialects and passes").run()
    except ModuleNotFoundError as err:  # xDSL's llvm target needs llvmlite
        sys.exit(f"error: this option needs the Python module '{err.name}', which tasic does not install")
    except (*user_errors, *pass_errors()) as err:
        sys.exit(f"error: {one_line(err)}")


def one_line(err: BaseException) -> str:
    """An xDSL diagnostic (location, source line, caret, message) as `location: message`; else the
    exception's first line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip() and line.strip() != "^"]
    if isinstance(err, ParseError | ArgSpecParseError) and len(lines) > 1:
        return f"{lines[0].rstrip(':')}: {lines[-1]}"
    return lines[0] if lines else type(err).__name__


if __name__ == "__main__":
    main()
