"""The PyTorch adapter: an IterableDataset whose batches come decoded from daemons.

Fetching, decoding, transforms and collation run in the daemons (in Rust), so the
training process needs no DataLoader worker processes: iterate the dataset directly,
or wrap it in ``DataLoader(ds, batch_size=None)``. Under ``torch.distributed`` each rank
streams its own part of every epoch, all parts of one length (``even``), so collective
operations never wait on a rank with fewer batches. With DataLoader workers, each
worker streams its own share.

Arrays become tensors without a copy; they share memory with Arrow's read-only
buffers, so they must not be modified in place (pass ``writable=True`` to get copies).
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info


def to_torch(batch: Dict[str, Any], writable: bool = False) -> Dict[str, Any]:
    """numpy arrays of a batch as torch tensors (others left as they are)."""
    out: Dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray) and v.dtype != np.uint64:
            if writable or v.flags.writeable:
                out[k] = torch.from_numpy(np.array(v, copy=True) if writable else v)
            else:
                with warnings.catch_warnings():
                    # Read-only Arrow memory, shared on purpose (module docs).
                    warnings.filterwarnings("ignore", message=".*not writable.*")
                    out[k] = torch.from_numpy(v)
        elif isinstance(v, np.ndarray):
            # torch has no uint64 tensors for every op; row ids fit int64.
            out[k] = torch.from_numpy(v.astype(np.int64))
        else:
            out[k] = v
    return out


class TorchStream(IterableDataset):
    """Batches of a :class:`deeplake_rs.Dataset` for a training loop (module docs).

    Each iteration is one epoch; the epoch advances after a complete pass (or is set
    with :meth:`set_epoch`). :meth:`state_dict` taken between batches and given to
    :meth:`load_state_dict` (in this or a new process) resumes right after the last
    batch yielded.
    """

    def __init__(
        self,
        dataset: Any,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        even: Optional[bool] = None,
        writable: bool = False,
        **stream_kwargs: Any,
    ) -> None:
        super().__init__()
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        self.dataset = dataset
        self.rank = rank or 0
        self.world_size = world_size or 1
        self.even = (self.world_size > 1) if even is None else even
        self.writable = writable
        self.kwargs = stream_kwargs
        self._epoch = int(stream_kwargs.pop("epoch", 0))
        self._resume: Optional[List[Optional[str]]] = None
        self._stream: Any = None

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch
        self._resume = None

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self._epoch
        stream = self.dataset.stream(
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            num_workers=workers,
            even=self.even,
            epoch=epoch,
            cursors=self._resume,
            **self.kwargs,
        )
        self._stream = stream
        try:
            for batch in stream:
                yield to_torch(batch, self.writable)
        finally:
            stream.close()
        self._stream = None
        self._resume = None
        self._epoch = epoch + 1

    def state_dict(self) -> Dict[str, Any]:
        """Where the current epoch stands: the epoch and each daemon's cursor."""
        cursors = self._stream.cursors() if self._stream is not None else self._resume
        return {
            "epoch": self._epoch,
            "cursors": list(cursors) if cursors is not None else None,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if (state.get("rank"), state.get("world_size")) != (self.rank, self.world_size):
            raise ValueError(
                f"state of rank {state.get('rank')} of {state.get('world_size')} given to "
                f"rank {self.rank} of {self.world_size}"
            )
        self._epoch = int(state["epoch"])
        self._resume = state.get("cursors")
