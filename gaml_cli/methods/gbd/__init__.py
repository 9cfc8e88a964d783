"""Graph Beta Diffusion (GBD, Liu et al. 2024, arXiv 2406.09357) on beta diffusion (Zhou et al. 2023)."""
