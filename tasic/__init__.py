"""tasic: a compiler from transformer models to a transformer-only ASIC, with an ISA simulator."""
