"""Thin CLI layer: options, help text with an example, and a call into core/methods.

Command modules import only typer and the standard library at module level; everything
heavy (numpy, torch, safetensors) is imported inside the command function, so
`gaml --help` and completion stay fast and never import torch.
"""
