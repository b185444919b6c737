"""lit configuration: every .mlir file here is a tasic-opt | filecheck test."""

import os
import sys

import lit.formats

config.name = "tasic"  # noqa: F821
config.test_format = lit.formats.ShTest()  # noqa: F821
config.suffixes = [".mlir"]  # noqa: F821
config.test_source_root = os.path.dirname(__file__)  # noqa: F821
config.environment["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + os.environ.get("PATH", "")  # noqa: F821
