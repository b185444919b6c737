"""Run the lit + filecheck suite under tests/filecheck as one pytest test."""

import subprocess
import sys
from pathlib import Path

FILECHECK_DIR = Path(__file__).parent / "filecheck"


def test_filecheck_suite() -> None:
    """Every tasic-opt | filecheck test passes."""
    result = subprocess.run(
        [str(Path(sys.prefix) / "bin" / "lit"), "-v", str(FILECHECK_DIR)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
