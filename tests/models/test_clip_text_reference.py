"""CLIP's text tower and the ResNet zero-shot head against open_clip's PyTorch CLIP
(make test-reference).

The tiny random CLIP of tests/models/test_clip_text.py (OpenAI naming: a ModifiedResNet image tower
and a small text tower) is built into open_clip's `CLIP` by open_clip's own reader of OpenAI
state dicts (`build_model_from_openai_state_dict`, which infers the architecture as it does for
OpenAI's files), saved the ways real checkpoints are (a TorchScript archive traced like
OpenAI's `.pt`; `torch.save` of the state dict, as open_clip exports), loaded through rrjax's
torch-free reader and converter, and run on the same tokens.
"""

import warnings

import jax
import numpy as np
import pytest

from rrjax.evaluation import zeroshot
from rrjax.models import clip_resnet, clip_text
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD
from tests.models.test_clip_resnet_reference import open_clip_module
from tests.models.test_clip_text import CLASSES, TEXT, _clip_state, _openai_tokens, _write_tokenizer
from tests.models.test_clip_vit import _VOCAB

pytestmark = pytest.mark.reference
torch = pytest.importorskip("torch")

TEMPLATES = ("a photo of a {}.", "a {}.")
RESOLUTION = 64


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return _write_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", _VOCAB)


@pytest.fixture(scope="module")
def open_clip_model():
  """open_clip's CLIP holding the tiny random weights, float32, eval mode."""
  state = {k: torch.from_numpy(v) for k, v in _clip_state().items()}
  model = open_clip_module("model").build_model_from_openai_state_dict(dict(state),
                                                                       cast_dtype=None)
  # The builder converts the weights to float16 as OpenAI ships them; keep them exact.
  model.float().load_state_dict(state)
  assert model.transformer.resblocks[0].attn.num_heads == TEXT["heads"]
  return model.eval()


@pytest.fixture(scope="module")
def checkpoints(open_clip_model, tmp_path_factory):
  """`{format: path}`: a TorchScript archive like OpenAI's, and a torch.save state dict."""
  path = tmp_path_factory.mktemp("open_clip")
  images = torch.ones(1, 3, RESOLUTION, RESOLUTION)
  text = torch.zeros(1, TEXT["context_length"], dtype=torch.int64)
  # Tracing warns about the shape checks inside `F.multi_head_attention_forward`; shapes are
  # fixed here, so the trace is exact.
  with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore", torch.jit.TracerWarning)
    traced = torch.jit.trace_module(open_clip_model, inputs=dict(
        forward=(images, text), encode_text=(text,), encode_image=(images,)))
  torch.jit.save(traced, str(path / "RN-tiny.pt"))
  torch.save(open_clip_model.state_dict(), path / "open_clip_model.pt")
  return {"torchscript": str(path / "RN-tiny.pt"), "state_dict": str(path / "open_clip_model.pt")}


def _encode_text(model, ids):
  with torch.no_grad():
    return model.encode_text(torch.from_numpy(ids)).numpy()


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict"])
def test_text_features_match_open_clip(open_clip_model, checkpoints, tokenizer_dir, fmt):
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
  prompts = [t.format(c) for t in TEMPLATES for c in CLASSES]
  module, variables = clip_text.load_weights(checkpoints[fmt])
  assert module == clip_text.TextTransformer(**TEXT)
  # open_clip gets OpenAI's layout (zeros to the full context); rrjax the tokenizer's padding.
  want = _encode_text(open_clip_model, _openai_tokens(tokenizer, prompts, TEXT["context_length"]))
  ids = tokenizer(prompts, padding=True, return_tensors="np")["input_ids"]
  got = np.asarray(jax.jit(module.apply)(variables, ids))
  diff = float(np.abs(got - want).max())
  print(f"{fmt}: encode_text max abs diff {diff:.2e} (outputs up to {np.abs(want).max():.2f}, "
        f"between prompts {np.abs(want[0] - want[1]).max():.2f})")
  assert got.shape == want.shape == (len(prompts), TEXT["embed_dim"])
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_zeroshot_head_matches_open_clip(open_clip_model, checkpoints, tokenizer_dir):
  """OpenAI's zero-shot recipe in open_clip (normalised prompt features averaged over the
  templates, renormalised) against `classifier_for_teacher`, and the logits of both CLIPs."""
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
  columns = []
  for name in CLASSES:
    ids = _openai_tokens(tokenizer, [t.format(name) for t in TEMPLATES], TEXT["context_length"])
    features = torch.from_numpy(_encode_text(open_clip_model, ids))
    mean = torch.nn.functional.normalize(features, dim=-1).mean(dim=0)
    columns.append(mean / mean.norm())
  want = torch.stack(columns, dim=1).numpy()
  got = zeroshot.classifier_for_teacher("clip_rn101", checkpoints["torchscript"], CLASSES,
                                        list(TEMPLATES), tokenizer=tokenizer_dir)
  diff = float(np.abs(got - want).max())
  print(f"classifier max abs diff {diff:.2e}")
  assert got.shape == want.shape == (TEXT["embed_dim"], len(CLASSES))
  np.testing.assert_allclose(got, want, atol=1e-4)

  images = np.random.default_rng(1).uniform(size=(2, RESOLUTION, RESOLUTION, 3))
  images = images.astype(np.float32)
  normalised = (images - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)
  with torch.no_grad():
    image_features = open_clip_model.encode_image(
        torch.from_numpy(normalised.transpose(0, 3, 1, 2).copy()), normalize=True)
    want_logits = (100.0 * image_features @ torch.from_numpy(want)).numpy()
  arch = clip_resnet.Arch("tiny", (1, 1, 1, 1), 8, TEXT["embed_dim"], 4)
  module, variables = clip_resnet.build(arch, pretrained=True, head="embed",
                                        weights=checkpoints["torchscript"], resolution=RESOLUTION)
  logits = np.asarray(zeroshot.zeroshot_logits(module.apply(variables, images), got))
  diff = float(np.abs(logits - want_logits).max())
  print(f"zero-shot logits max abs diff {diff:.2e} (logits up to "
        f"{np.abs(want_logits).max():.1f})")
  np.testing.assert_allclose(logits, want_logits, atol=1e-3)
