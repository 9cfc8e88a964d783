"""Deep topic models: the generalized gamma belief network (arXiv 2408.03388) and the classic
GBN / WHAI (linear links) in the same code, with the upward-downward Weibull inference network."""
