"""deeplake_rs: stream decoded batches from deeplake daemons into training loops.

    import deeplake_rs
    ds = deeplake_rs.Dataset("http://127.0.0.1:7400/datasets/demo")
    for batch in ds.stream(tensors=["images", "labels"], batch_size=64, shuffle=True):
        images, labels = batch["images"], batch["labels"]   # numpy arrays

``ds.pytorch(...)`` gives a torch IterableDataset (needs torch). Needs only numpy and
pyarrow otherwise.
"""

from ._http import DaemonError, StreamError
from .dataset import Dataset, QueryResult
from .stream import Stream, batch_to_numpy

__all__ = ["Dataset", "QueryResult", "Stream", "DaemonError", "StreamError", "batch_to_numpy"]
__version__ = "0.1.0"
