"""A dataset served by one or more deeplake daemons, for training loops."""

from __future__ import annotations

import urllib.parse
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from ._http import Endpoint
from .stream import Batch, Stream

Transforms = Mapping[str, Sequence[Mapping[str, Any]]]


def _split(url: str) -> tuple:
    """``http://host:port/datasets/NAME`` -> (``http://host:port``, NAME)."""
    p = urllib.parse.urlparse(url)
    parts = [x for x in p.path.split("/") if x]
    if len(parts) != 2 or parts[0] != "datasets":
        raise ValueError(f"{url!r}: expected http(s)://host:port/datasets/NAME")
    return f"{p.scheme}://{p.netloc}", urllib.parse.unquote(parts[1])


class QueryResult:
    """The rows a TQL query selected (source rows, in the query's order)."""

    def __init__(self, dataset: "Dataset", query: str, ref: Optional[str], answer: Dict[str, Any]) -> None:
        self.dataset = dataset
        self.query = query
        self.ref = ref
        self.total: int = answer["total"]
        self.rows: List[Dict[str, Any]] = answer["rows"]

    def __len__(self) -> int:
        return self.total

    def stream(self, **kwargs: Any) -> Stream:
        """Streams this query's rows (the query runs again on the daemon)."""
        return self.dataset.stream(query=self.query, ref=self.ref, **kwargs)


class Dataset:
    """A dataset on one or more daemons.

    ``Dataset("http://host:7400/datasets/demo")`` reads from one daemon; a list of such
    URLs (the same dataset served by several daemons, over a shared bucket say) fans
    in: each daemon streams its own share of every epoch.
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]],
        token: Optional[str] = None,
        timeout: float = 300.0,
    ) -> None:
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("give at least one daemon URL")
        split = [_split(u) for u in urls]
        names = {n for _, n in split}
        if len(names) != 1:
            raise ValueError(f"the URLs name different datasets: {sorted(names)}")
        self.name: str = names.pop()
        self.endpoints = [Endpoint(b, token, timeout) for b, _ in split]

    def __repr__(self) -> str:
        return f"Dataset({self.name!r} on {[e.base for e in self.endpoints]})"

    @property
    def _path(self) -> str:
        return "/datasets/" + urllib.parse.quote(self.name, safe="")

    def info(self, ref: Optional[str] = None) -> Dict[str, Any]:
        """Length, branch, commit and tensors (from the first daemon)."""
        q = "?" + urllib.parse.urlencode({"ref": ref}) if ref else ""
        return self.endpoints[0].json("GET", self._path + q)

    def __len__(self) -> int:
        return int(self.info()["length"])

    @property
    def tensors(self) -> List[str]:
        return [t["name"] for t in self.info()["tensors"]]

    def query(self, tql: str, ref: Optional[str] = None, limit: int = 100) -> QueryResult:
        """Runs a TQL query; the result holds its first page and can be streamed."""
        body: Dict[str, Any] = {"query": tql, "limit": limit}
        if ref is not None:
            body["ref"] = ref
        return QueryResult(self, tql, ref, self.endpoints[0].json("POST", self._path + "/query", body))

    def stream(
        self,
        tensors: Optional[Sequence[str]] = None,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        epoch: int = 0,
        shuffle_buffer: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        even: bool = False,
        drop_last: bool = False,
        query: Optional[str] = None,
        view: Optional[str] = None,
        rows: Optional[Sequence[int]] = None,
        ref: Optional[str] = None,
        transforms: Optional[Transforms] = None,
        decode: bool = True,
        ragged: str = "pad",
        prefetch_mb: Optional[int] = None,
        cursors: Optional[List[Optional[str]]] = None,
    ) -> Stream:
        """One epoch of batches as dicts of numpy arrays (see :class:`Stream`).

        ``transforms`` maps a tensor to a list such as
        ``[{"resize": {"height": 224, "width": 224}}, {"flip": {"p": 0.5}},
        {"normalize": {"mean": [...], "std": [...]}}]``. ``cursors`` (from
        :meth:`Stream.cursors`) resume an epoch where it stopped.
        """
        req: Dict[str, Any] = {
            "batch_size": batch_size,
            "shuffle": shuffle,
            "seed": seed,
            "epoch": epoch,
            "worker": worker,
            "num_workers": num_workers,
            "even": even,
            "drop_last": drop_last,
            "decode": decode,
            "ragged": ragged,
        }
        for key, val in (
            ("tensors", list(tensors) if tensors is not None else None),
            ("shuffle_buffer", shuffle_buffer),
            ("query", query),
            ("view", view),
            ("rows", list(rows) if rows is not None else None),
            ("ref", ref),
            ("transforms", {k: list(v) for k, v in transforms.items()} if transforms else None),
            ("prefetch_mb", prefetch_mb),
        ):
            if val is not None:
                req[key] = val
        return Stream(self.endpoints, self.name, req, rank, world_size, cursors)

    def numpy(self, **kwargs: Any) -> Iterator[Batch]:
        """Batches of one epoch as dicts of numpy arrays (``stream`` as a generator)."""
        with self.stream(**kwargs) as s:
            yield from s

    def pytorch(self, **kwargs: Any) -> Any:
        """A ``torch.utils.data.IterableDataset`` over this dataset (see
        :class:`deeplake_rs.torch.TorchStream`); needs torch."""
        from .torch import TorchStream

        return TorchStream(self, **kwargs)
