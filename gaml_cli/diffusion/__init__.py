"""Shared diffusion pieces: EDM preconditioning, loss and samplers; small UNets; SD adapters."""
