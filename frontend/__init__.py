"""tasic.frontend: PyTorch and Hugging Face models to the tfm dialect (docs/frontend.md)."""
