"""One package per paper: loss.py reads like the paper's equations, train.py is the explicit loop."""
