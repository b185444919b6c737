"""tasic.passes."""
