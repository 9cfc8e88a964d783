"""Preference alignment of diffusion models: Diffusion-DPO (Wallace et al. 2023, arXiv 2311.12908)
and Diffusion-RPO (Gu et al. 2024, arXiv 2406.06382).

Diffusion-RPO's authors released no code: gaml's version is a reconstruction from the paper and
from the same group's public LLM RPO loss (the M x M matrix of winner-vs-loser margins weighted by
embedding similarity). Every choice the paper leaves open is an option of `RPOConfig`.

loss.py  the per-timestep preference losses (DPO sigmoid / hinge / IPO; RPO's weight matrix)
pairs.py the preference pairs: JSONL with image paths or Pick-a-Pic v2 parquet shards, decoded
         once to (N, C, size, size) tensors in [-1, 1] (`read_pairs` -> `PairSet`)
"""
