"""Shared by the tests of streamed snapshot reads: a one-table module, tiny blocks, spies."""

from __future__ import annotations

import os

import pytest
import torch

import embviz.snapshot_reader
import embviz.snapshot_rows
import embviz.snapshots
import embviz.tablerows

BLOCK = 300  # bytes a block holds: a few rows of 16 fp32 values


class Holder(torch.nn.Module):
    """A module whose state dict is one table ``user``."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def state_dict(self, *args, **kwargs):
        return {"embedding_bags.user.weight": self.weight}

    def load_state_dict(self, *args, **kwargs):
        pass


@pytest.fixture
def small_blocks(monkeypatch):
    """Tiny blocks, every mapped range recorded, and no whole-table read allowed."""
    mapped: list[int] = []
    real_map = embviz.snapshot_reader._map

    def spy_map(file, begin, length, dtype):
        mapped.append(length)
        return real_map(file, begin, length, dtype)

    def refuse(*args, **kwargs):
        raise AssertionError("a snapshot table was read whole")

    real_load = embviz.tablerows.load_table

    def load_table(source, name):
        if isinstance(source, str | os.PathLike):
            refuse()
        return real_load(source, name)

    monkeypatch.setattr(embviz.snapshot_rows, "BLOCK_BYTES", BLOCK)
    monkeypatch.setattr(embviz.snapshot_reader, "_map", spy_map)
    monkeypatch.setattr(embviz.snapshot_reader, "read_into", refuse)
    monkeypatch.setattr(embviz.snapshots, "read_table", refuse)
    monkeypatch.setattr(embviz.tablerows, "load_table", load_table)
    return mapped
