"""rrjax: robust representation recovery in JAX.

Train a student encoder S so that S(A(x)) recovers a frozen teacher's representation R(x) of the
clean image x, for a known forward operator A (Jalal et al., "Inverse problems leveraging
pre-trained contrastive representations", NeurIPS 2021).
"""

__version__ = "0.1.0"
