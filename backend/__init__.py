"""tasic.backend."""
