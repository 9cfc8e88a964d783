"""Shared pieces for learned representations (`gaml embed`): the evaluation protocols of
embeddings artifacts (probe.py), whichever method made them."""
