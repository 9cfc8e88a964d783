"""Score Forgetting Distillation (SFD): SiD with a forgetting term (arXiv 2409.11219)."""
