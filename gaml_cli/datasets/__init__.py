"""Data sets gaml ships or generates offline."""
