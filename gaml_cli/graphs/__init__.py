"""Graphs as gaml artifacts: JSONL records, offline benchmark sets, MMD evaluation, pictures."""
