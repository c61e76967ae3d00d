"""Input data: datasets named by strings, random-access sources, batches for training and eval.

    source = rrjax.data.load("fashion_mnist_local", "train[:90%]")   # or "cifar10",
    #   "imagenet2012", "imagefolder:/path/to/images", ...
    source.get([0, 1])       # (uint8 [2, 28, 28, 3], int32 [2]): raw images, 3-channel
    for batch in rrjax.data.batches(source, 256, train=True, seed=0):
      ...  # image float32 [b, S, S, 3] in [0, 1], label, index int32 [b], mask bool [b]
    images, labels = rrjax.data.load_arrays(rrjax.data.load("fashion_mnist_local", "test"))

Modules: `catalog` (names -> sources), `source` (the `Source` contract), `splits` (split
strings), `tfds_source`, `fashion_mnist_local` (the TFDS builder), `imagefolder`, `views`
(training and eval views), `pipeline` (batching, process slices, prefetch).
"""

from rrjax.data.catalog import load
from rrjax.data.fashion_mnist_local import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from rrjax.data.pipeline import Batch
from rrjax.data.pipeline import batches
from rrjax.data.pipeline import load_arrays
from rrjax.data.source import Source
from rrjax.data.source import subset

__all__ = ["Batch", "FASHION_MNIST_CLASS_NAMES", "Source", "batches", "load", "load_arrays",
           "subset"]
