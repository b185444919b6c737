"""tasic.frontend."""
