"""Input data: datasets named by strings, random-access sources, batches for training and eval.

    source = rrjax.data.load("fashion_mnist_local", "train[:90%]")   # or "cifar10",
    #   "imagenet2012", "imagefolder:/path/to/images", ...
    source.get([0, 1])       # (uint8 [2, 28, 28, 3], int32 [2]): raw images, 3-channel
    for batch in rrjax.data.batches(source, 256, train=True, seed=0, num_workers=8):
      ...  # image uint8 [b, S, S, 3], label, index int32 [b], mask bool [b]
      x = rrjax.data.to_float(batch["image"])   # on device, in the jitted step: [0, 1]
    source = rrjax.data.in_memory(source, max_bytes=1 << 30)  # decoded once if small

Modules: `catalog` (names -> sources), `source` (the `Source` contract), `splits` (split
strings), `tfds_source`, `fashion_mnist_local` (the TFDS builder), `imagefolder`, `views`
(training and eval views, JPEGs decoded at reduced size), `pipeline` (Grain batching, process
slices, worker processes), `synthetic` (ImageNet-like JPEG folders for checks and benchmarks).
"""

from rrjax.data.catalog import load
from rrjax.data.fashion_mnist_local import CLASS_NAMES as FASHION_MNIST_CLASS_NAMES
from rrjax.data.pipeline import Batch
from rrjax.data.pipeline import batches
from rrjax.data.pipeline import to_float
from rrjax.data.source import Source
from rrjax.data.source import in_memory
from rrjax.data.source import subset

__all__ = ["Batch", "FASHION_MNIST_CLASS_NAMES", "Source", "batches", "in_memory", "load",
           "subset", "to_float"]
