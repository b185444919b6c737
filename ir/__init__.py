"""tasic.ir."""
