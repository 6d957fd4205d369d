"""deeplake_rs: stream decoded batches from deeplake daemons into training loops.

    import deeplake_rs
    ds = deeplake_rs.Dataset("http://127.0.0.1:7400/datasets/demo")
    for batch in ds.stream(tensors=["images", "labels"], batch_size=64, shuffle=True):
        images, labels = batch["images"], batch["labels"]   # numpy arrays

``@deeplake_rs.compute`` functions run in parallel (threads, processes or a Ray
cluster) into a dataset, landing as one commit (see ``deeplake_rs.transform``).

``ds.pytorch(...)`` gives a torch IterableDataset (needs torch). Needs only numpy and
pyarrow otherwise.
"""

from ._http import DaemonError, StreamError
from .dataset import Dataset, QueryResult
from .stream import Stream, batch_to_numpy
from .transform import ComputeFunction, Pipeline, TransformError, compose, compute

__all__ = [
    "Dataset",
    "QueryResult",
    "Stream",
    "DaemonError",
    "StreamError",
    "batch_to_numpy",
    "compute",
    "compose",
    "ComputeFunction",
    "Pipeline",
    "TransformError",
]
__version__ = "0.1.0"
