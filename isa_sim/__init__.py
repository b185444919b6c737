"""tasic.isa_sim."""
