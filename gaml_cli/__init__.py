"""gaml: a command-line suite for generative-AI research methods."""

__version__ = "0.1.0"
