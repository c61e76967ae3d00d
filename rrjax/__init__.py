"""rrjax: robust representation recovery in JAX.

Train a student encoder S so that S(A(x)) recovers a frozen teacher's representation R(x) of the
clean image x, for a known forward operator A (Ravula, Smyrnis, Jordan, Dimakis, "Inverse
problems leveraging pre-trained contrastive representations", NeurIPS 2021).

The packages follow the run (`rrjax.run.train_and_evaluate`): `config` (fields, experiments,
checks, the workdir), `data`, `corruptions` (the operators A), `models` (encoders), `training`
(the student and the baseline), `evaluation` (features, probes, top-1 over corruption draws),
`outputs` (rows, report, plots); `parallel` spans devices and processes; `losses` and
`errors` stand alone. `python -m rrjax.main` is the entry point.
"""

__version__ = "0.1.0"


def load_encoder(directory):
  """The robust encoder exported to `directory` by `python -m rrjax.export`
  (`rrjax.encoder.load_encoder`: `.embed(images)`, `.classify(images, top_k)`)."""
  from rrjax import encoder  # pylint: disable=import-outside-toplevel  # JAX, on first use
  return encoder.load_encoder(directory)
