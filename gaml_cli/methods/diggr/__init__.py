"""DiGGR (arXiv 2408.13471): disentangled generative graph representation learning. No code is
public: gaml's DiGGR is a RECONSTRUCTION from the paper; every choice the paper leaves open is
an option (methods/diggr/model.py lists them)."""
