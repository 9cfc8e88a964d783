"""Method-agnostic building blocks shared by every gaml command (no torch at import time)."""
