"""Score identity Distillation (SiD, arXiv 2404.04057) with long and short guidance (SiD-LSG, arXiv 2406.01561)."""
