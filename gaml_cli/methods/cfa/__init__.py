"""Contrastive factor analysis (a reconstruction of arXiv 2407.21740), its non-negative version,
and the SimCLR and NCL baselines: `gaml embed cfa | simclr | ncl`."""
