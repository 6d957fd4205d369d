"""The PyTorch adapter against real daemons and real torch (the PyPI build, on CPU)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from deeplake_rs import Dataset
from deeplake_rs.torch import to_torch

from conftest import ROWS


def rows(batches) -> list:
    return [int(r) for b in batches for r in b["__row"]]


def test_batches_are_tensors_sharing_arrow_memory(url):
    ts = Dataset(url).pytorch(tensors=["images", "labels"], batch_size=32)
    batches = list(ts)
    assert rows(batches) == list(range(ROWS))
    b = batches[0]
    assert isinstance(b["images"], torch.Tensor) and b["images"].dtype == torch.uint8
    assert tuple(b["images"].shape) == (32, 16, 16, 3)
    assert b["labels"].dtype == torch.uint32
    # No copy: the tensor is a view of the batch's numpy array (Arrow's buffer).
    nb = next(iter(Dataset(url).stream(tensors=["images"], batch_size=32)))
    tt = to_torch(nb)["images"]
    assert tt.data_ptr() == nb["images"].__array_interface__["data"][0]
    assert torch.equal(tt, b["images"])
    copied = to_torch(nb, writable=True)["images"]
    assert copied.data_ptr() != tt.data_ptr() and torch.equal(copied, tt)


def test_epochs_advance_and_a_state_dict_resumes(url):
    kw = dict(tensors=["labels"], batch_size=8, shuffle=True, seed=3)
    ts = Dataset(url).pytorch(**kw)
    e0 = rows(ts)
    e1 = rows(ts)
    assert sorted(e0) == sorted(e1) == list(range(ROWS)) and e0 != e1

    ts = Dataset(url).pytorch(**kw)
    it = iter(ts)
    head = [next(it) for _ in range(4)]
    state = ts.state_dict()
    assert state["epoch"] == 0 and state["cursors"][0].startswith("0:")
    fresh = Dataset(url).pytorch(**kw)
    fresh.load_state_dict(state)
    assert rows(head) + rows(fresh) == e0
    # The next pass is the next epoch.
    assert rows(fresh) == e1


def test_dataloader_without_and_with_worker_processes(url):
    ts = Dataset(url).pytorch(tensors=["labels"], batch_size=10)
    assert rows(DataLoader(ts, batch_size=None)) == list(range(ROWS))
    got = rows(DataLoader(Dataset(url).pytorch(tensors=["labels"], batch_size=10), batch_size=None, num_workers=2))
    assert sorted(got) == list(range(ROWS))


def test_ranks_get_equal_disjoint_parts(url):
    parts = [rows(Dataset(url).pytorch(tensors=["labels"], batch_size=7, rank=r, world_size=4,
                                       shuffle=True, seed=8)) for r in range(4)]
    assert len({len(p) for p in parts}) == 1
    assert set().union(*map(set, parts)) == set(range(ROWS))
    assert sum(len(p) for p in parts) == ROWS  # 120 splits evenly: no padding rows
    assert np.unique(np.concatenate(parts)).size == ROWS
