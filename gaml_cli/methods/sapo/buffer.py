"""SAPO's replay buffer: first in, first out, drawn with replacement with probability
proportional to 1 / (1 + times drawn), so items not yet trained on come first.

Each item has a stable integer id (the how-many-th item pushed in this run). The draw counts are
kept per item and go into the checkpoint with the items and the id counter, so a resumed run draws
exactly as the uninterrupted one (the reference code keyed the counts by Python object ids, which
do not survive a restart).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Item:
    id: int
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    draws: int = 0


class ReplayBuffer:
    def __init__(self, size: int):
        if size < 1:
            raise ValueError("the replay buffer needs room for at least one item")
        self.size = size
        self.items: list[Item] = []
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.items)

    def push(self, prompt: list[int], chosen: list[int], rejected: list[int]) -> int:
        """Add an item (evicting the oldest when full); returns its id."""
        item = Item(self.next_id, list(prompt), list(chosen), list(rejected))
        self.next_id += 1
        self.items.append(item)
        if len(self.items) > self.size:
            del self.items[: len(self.items) - self.size]
        return item.id

    def weights(self) -> torch.Tensor:
        """The draw probabilities: 1 / (1 + times drawn), normalised."""
        w = torch.tensor([1.0 / (1 + it.draws) for it in self.items], dtype=torch.float64)
        return w / w.sum()

    def draw(self, n: int, gen: torch.Generator) -> list[Item]:
        """n items with replacement by weights(); each draw counts (an item drawn twice counts 2)."""
        if not self.items:
            raise RuntimeError("the replay buffer is empty")
        idx = torch.multinomial(self.weights(), n, replacement=True, generator=gen).tolist()
        picked = [self.items[i] for i in idx]
        for it in picked:
            it.draws += 1
        return picked

    # -------------------------------------------------------------- checkpoint state (tensors only)
    def state_dict(self) -> dict:
        lengths = torch.tensor([[len(it.prompt), len(it.chosen), len(it.rejected)] for it in self.items],
                               dtype=torch.int64).reshape(-1, 3)
        tokens = [t for it in self.items for t in (*it.prompt, *it.chosen, *it.rejected)]
        return {"size": self.size, "next_id": self.next_id,
                "ids": torch.tensor([it.id for it in self.items], dtype=torch.int64),
                "draws": torch.tensor([it.draws for it in self.items], dtype=torch.int64),
                "lengths": lengths, "tokens": torch.tensor(tokens, dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        self.size = int(state["size"])
        self.next_id = int(state["next_id"])
        tokens = state["tokens"].tolist()
        self.items, pos = [], 0
        for i, d, (a, b, c) in zip(state["ids"].tolist(), state["draws"].tolist(), state["lengths"].tolist()):
            p, ch, r = tokens[pos:pos + a], tokens[pos + a:pos + a + b], tokens[pos + a + b:pos + a + b + c]
            pos += a + b + c
            self.items.append(Item(i, p, ch, r, d))

    def draw_counts(self) -> dict[int, int]:
        return {it.id: it.draws for it in self.items}
