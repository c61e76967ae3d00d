"""Tests of the CLIP ModifiedResNet tower and its checkpoint loading, on a tiny configuration.

The numerics proof runs without torch: a random state dict in OpenAI's naming is written as a
real checkpoint (torch.save's zip format, or TorchScript's), loaded by the real code, and the
Flax output is compared with a slow NumPy forward pass of the same network written here from
the raw PyTorch-layout tensors (NCHW, OIHW).
"""

import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import rrjax.models
from rrjax import errors
from rrjax.models import clip_resnet
from rrjax.models.preprocess import CLIP_MEAN, CLIP_STD
from tests.models.test_torch_reader import _script, _Storage, _tensor, write_zip

TINY = clip_resnet.Arch("tiny", layers=(1, 1, 1, 1), width=8, embed_dim=16, heads=2)
RESOLUTION = 64  # a 2 x 2 final feature map: 5 attention tokens
TEXT_TENSORS = ("positional_embedding", "token_embedding.weight", "logit_scale",
                "transformer.resblocks.0.attn.in_proj_weight", "transformer.attn_mask")


def _tiny_state(layers=TINY.layers, width=TINY.width, embed_dim=TINY.embed_dim, grid=2,
                seed=0) -> dict[str, np.ndarray]:
  """A random CLIP state dict in OpenAI's naming, text tower stand-ins included.

  Weights are scaled by their fan-in and BatchNorm statistics kept near 1 so activations stay
  O(1) through the tower, and the comparison's tolerance means something.
  """
  rng = np.random.default_rng(seed)
  state = collections.OrderedDict()

  def conv(name, out, inp, k):
    state[f"visual.{name}.weight"] = (rng.normal(size=(out, inp, k, k)) / math.sqrt(inp * k * k))

  def bn(name, c):
    state[f"visual.{name}.weight"] = rng.uniform(0.5, 1.5, c)
    state[f"visual.{name}.bias"] = rng.normal(0, 0.1, c)
    state[f"visual.{name}.running_mean"] = rng.normal(0, 0.1, c)
    state[f"visual.{name}.running_var"] = rng.uniform(0.5, 1.5, c)
    state[f"visual.{name}.num_batches_tracked"] = np.array(7, np.int64)

  def linear(name, out, inp):
    state[f"visual.{name}.weight"] = rng.normal(size=(out, inp)) / math.sqrt(inp)
    state[f"visual.{name}.bias"] = rng.normal(0, 0.1, out)

  for i, (out, inp) in enumerate([(width // 2, 3), (width // 2, width // 2), (width, width // 2)]):
    conv(f"conv{i + 1}", out, inp, 3)
    bn(f"bn{i + 1}", out)
  inplanes = width
  for stage, blocks in enumerate(layers):
    planes = width * 2**stage
    for i in range(blocks):
      prefix = f"layer{stage + 1}.{i}"
      conv(f"{prefix}.conv1", planes, inplanes, 1)
      bn(f"{prefix}.bn1", planes)
      conv(f"{prefix}.conv2", planes, planes, 3)
      bn(f"{prefix}.bn2", planes)
      conv(f"{prefix}.conv3", 4 * planes, planes, 1)
      bn(f"{prefix}.bn3", 4 * planes)
      if i == 0:  # strided, or (layer1) widening: a projection shortcut
        conv(f"{prefix}.downsample.0", 4 * planes, inplanes, 1)
        bn(f"{prefix}.downsample.1", 4 * planes)
      inplanes = 4 * planes
  c = 32 * width
  state["visual.attnpool.positional_embedding"] = rng.normal(size=(grid * grid + 1, c)) / c**0.5
  for name in ("k_proj", "q_proj", "v_proj"):
    linear(f"attnpool.{name}", c, c)
  linear("attnpool.c_proj", embed_dim, c)
  for name in TEXT_TENSORS:
    state[name] = rng.normal(size=(3, 4))
  return collections.OrderedDict(
      (k, v if v.dtype == np.int64 else v.astype(np.float32)) for k, v in state.items())


def _torch_tree(state: dict) -> collections.OrderedDict:
  """The tensors of `state` as torch.save pickles a state dict, one storage each."""
  tree = collections.OrderedDict()
  for i, (name, value) in enumerate(state.items()):
    strides = tuple(int(np.prod(value.shape[d + 1:])) for d in range(value.ndim))
    tree[name] = _tensor(_Storage(str(i), value.reshape(-1)), 0, value.shape, strides,
                         parameter=not name.endswith(("running_mean", "running_var", "tracked")))
  return tree


# --- an independent NumPy forward pass, NCHW -----------------------------------------------------

def _np_conv(x, w, stride=1, pad=0):
  """Cross-correlation of `x` [B, I, H, W] with `w` [O, I, k, k], as `torch.nn.Conv2d`."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  k = w.shape[2]
  ho, wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
  out = np.zeros((x.shape[0], w.shape[0], ho, wo))
  for i in range(k):
    for j in range(k):
      patch = x[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]
      out += np.einsum("bihw,oi->bohw", patch, w[:, :, i, j])
  return out


def _np_bn(x, s, name):
  shape = (1, -1, 1, 1)
  return ((x - s[f"{name}.running_mean"].reshape(shape))
          / np.sqrt(s[f"{name}.running_var"].reshape(shape) + 1e-5)
          * s[f"{name}.weight"].reshape(shape) + s[f"{name}.bias"].reshape(shape))


def _np_avgpool(x, k):
  b, c, h, w = x.shape
  x = x[:, :, :h // k * k, :w // k * k]
  return x.reshape(b, c, h // k, k, w // k, k).mean(axis=(3, 5))


def _np_clip_resnet(images, state, layers, heads):
  """CLIP's image tower on `images` [B, H, W, 3] in [0, 1] (at the checkpoint's size)."""
  s = {k[len("visual."):]: v.astype(np.float64) for k, v in state.items()
       if k.startswith("visual.")}
  relu = lambda x: np.maximum(x, 0)
  x = ((images - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).transpose(0, 3, 1, 2)
  for i in (1, 2, 3):
    x = relu(_np_bn(_np_conv(x, s[f"conv{i}.weight"], 2 if i == 1 else 1, 1), s, f"bn{i}"))
  x = _np_avgpool(x, 2)
  for stage, blocks in enumerate(layers):
    for i in range(blocks):
      p, stride = f"layer{stage + 1}.{i}", 2 if stage > 0 and i == 0 else 1
      y = relu(_np_bn(_np_conv(x, s[f"{p}.conv1.weight"]), s, f"{p}.bn1"))
      y = relu(_np_bn(_np_conv(y, s[f"{p}.conv2.weight"], 1, 1), s, f"{p}.bn2"))
      y = _np_bn(_np_conv(_np_avgpool(y, stride), s[f"{p}.conv3.weight"]), s, f"{p}.bn3")
      if f"{p}.downsample.0.weight" in s:
        x = _np_bn(_np_conv(_np_avgpool(x, stride), s[f"{p}.downsample.0.weight"]), s,
                   f"{p}.downsample.1")
      x = relu(y + x)
  b, c = x.shape[:2]
  tokens = x.reshape(b, c, -1).transpose(0, 2, 1)  # [B, HW, C]
  tokens = np.concatenate([tokens.mean(axis=1, keepdims=True), tokens], axis=1)
  tokens = tokens + s["attnpool.positional_embedding"]
  proj = lambda name, t: t @ s[f"attnpool.{name}.weight"].T + s[f"attnpool.{name}.bias"]
  q, k, v = proj("q_proj", tokens[:, 0]), proj("k_proj", tokens), proj("v_proj", tokens)
  d = c // heads
  out = np.zeros((b, c))
  for h in range(heads):
    part = slice(h * d, (h + 1) * d)
    logits = np.einsum("bd,bnd->bn", q[:, part], k[:, :, part]) / math.sqrt(d)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    out[:, part] = np.einsum("bn,bnd->bd", weights, v[:, :, part])
  return proj("c_proj", out)


# --- tests ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
  state = _tiny_state()
  path = tmp_path_factory.mktemp("clip") / "tiny.pt"
  write_zip(path, _torch_tree(state))
  return state, path


def _images(n=2, size=RESOLUTION, seed=1):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3))


def _flat(variables):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, variables), sep="/")


def test_shapes_and_batch_stats_update(tiny_ckpt):
  _, path = tiny_ckpt
  module, variables = clip_resnet.build(TINY, pretrained=True, head="embed", weights=str(path),
                                        resolution=RESOLUTION)
  shapes = jax.eval_shape(module.init, jax.random.key(0), _images(1, size=40))
  assert jax.tree.map(lambda x: x.shape, shapes) == jax.tree.map(jnp.shape, variables)
  assert shapes["params"]["attnpool"]["positional_embedding"].shape == (5, 256)
  assert shapes["params"]["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 32, 64)
  # Jitted throughout: op-by-op execution compiles every op of the tower on its own. Other
  # input sizes are resized to 64 inside.
  assert jax.jit(module.apply)(variables, _images(3, size=40)).shape == (3, TINY.embed_dim)
  out, updates = jax.jit(functools.partial(module.apply, train=True, mutable=["batch_stats"]))(
      variables, _images())
  assert out.shape == (2, TINY.embed_dim)
  before, after = _flat(variables["batch_stats"]), _flat(updates["batch_stats"])
  assert sorted(before) == sorted(after)
  assert all(not np.allclose(before[k], after[k]) for k in before)


def test_checkpoint_matches_numpy_forward(tiny_ckpt):
  state, path = tiny_ckpt
  module, variables = clip_resnet.build(TINY, pretrained=True, head="embed", weights=str(path),
                                        resolution=RESOLUTION)
  images = _images()
  want = _np_clip_resnet(np.asarray(images, np.float64), state, TINY.layers, TINY.heads)
  got = jax.jit(module.apply)(variables, images)
  assert got.shape == (2, TINY.embed_dim) and np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_infers_config_from_shapes(tiny_ckpt):
  state, path = tiny_ckpt
  assert clip_resnet.infer_config(state) == {
      "layers": (1, 1, 1, 1), "width": 8, "embed_dim": 16, "heads": 4, "resolution": 64}
  inferred = _flat(clip_resnet.load_weights(path))  # heads do not change any shape
  given = _flat(clip_resnet.load_weights(path, layers=(1, 1, 1, 1), width=8, embed_dim=16,
                                         heads=2, resolution=64))
  assert sorted(inferred) == sorted(given)
  # RN101 told apart from RN50 by shapes alone (broadcast views: no real memory).
  rn101 = {}
  inplanes = 64
  for stage, blocks in enumerate((3, 4, 23, 3)):
    for i in range(blocks):
      planes = 64 * 2**stage
      rn101[f"visual.layer{stage + 1}.{i}.conv1.weight"] = np.broadcast_to(
          np.float32(0), (planes, inplanes, 1, 1))
      inplanes = 4 * planes
  rn101["visual.attnpool.positional_embedding"] = np.broadcast_to(np.float32(0), (50, 2048))
  rn101["visual.attnpool.c_proj.weight"] = np.broadcast_to(np.float32(0), (512, 2048))
  assert clip_resnet.infer_config(rn101) == {
      "layers": (3, 4, 23, 3), "width": 64, "embed_dim": 512, "heads": 32, "resolution": 224}


def test_open_clip_nesting_and_module_prefix(tiny_ckpt, tmp_path):
  state, path = tiny_ckpt
  nested = tmp_path / "epoch_1.pt"
  wrapped = collections.OrderedDict((f"module.{k}", v) for k, v in _torch_tree(state).items())
  write_zip(nested, {"epoch": 1, "name": "RN-tiny", "state_dict": wrapped})
  want, got = _flat(clip_resnet.load_weights(path)), _flat(clip_resnet.load_weights(nested))
  assert sorted(want) == sorted(got)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_open_clip_safetensors(tiny_ckpt, tmp_path):
  safetensors = pytest.importorskip("safetensors.numpy")
  state, path = tiny_ckpt
  safetensors.save_file(dict(state), tmp_path / "open_clip_model.safetensors")
  want = _flat(clip_resnet.load_weights(path))
  got = _flat(clip_resnet.load_weights(tmp_path / "open_clip_model.safetensors"))
  assert sorted(want) == sorted(got)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def write_torchscript(path, state: dict) -> None:
  """Writes `state` as a TorchScript archive of nested modules, like OpenAI's `.pt` files."""
  root = {}
  for name, tensor in _torch_tree(state).items():
    node = root
    *modules, leaf = name.split(".")
    for part in modules:
      node = node.setdefault(part, {})
    node[leaf] = tensor

  def script(attrs):
    return _script("Linear", training=False, **{
        k: script(v) if isinstance(v, dict) else v for k, v in attrs.items()})

  write_zip(path, script(root), torchscript=True)


def test_openai_torchscript_archive_in_half_precision(tiny_ckpt, tmp_path):
  # OpenAI's .pt files are TorchScript archives of the whole model in float16.
  state, _ = tiny_ckpt
  half = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in state.items()}
  path = tmp_path / "RN-tiny.pt"
  write_torchscript(path, half)
  got = _flat(clip_resnet.load_weights(path))
  want = _flat(clip_resnet.from_torch_state_dict(
      {k: v.astype(np.float32) for k, v in half.items()}))
  assert sorted(got) == sorted(want)
  for name in want:
    assert got[name].dtype == np.float32
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_wrong_architecture_names_the_tensor(tiny_ckpt, tmp_path):
  state, path = tiny_ckpt
  extra = _tiny_state(layers=(2, 1, 1, 1))
  with pytest.raises(ValueError, match=r"unexpected tensor 'visual\.layer1\.1\.bn1\.bias'"):
    clip_resnet.from_torch_state_dict(extra, layers=(1, 1, 1, 1))
  with pytest.raises(ValueError, match=r"'visual\.attnpool\.c_proj\.bias' has shape \(16,\)"):
    clip_resnet.from_torch_state_dict(state, embed_dim=32)
  with pytest.raises(ValueError, match="no CLIP image-tower tensors"):
    clip_resnet.from_torch_state_dict({k: v for k, v in state.items() if k in TEXT_TENSORS})
  # The tiny file is not RN50: refused by the registry builder, naming the first gap.
  entry = rrjax.models.info("clip_rn50")
  assert entry.embed_dim == 1024 and entry.has_pretrained
  with pytest.raises(ValueError, match=r"'visual\.attnpool\.c_proj\.bias' has shape \(16,\).*"
                                       r"\(1024,\); weights of another architecture"):
    rrjax.models.load("clip_rn50", weights=str(path), resolution=64)


def test_positional_embedding_resized_for_other_resolution(tiny_ckpt):
  state, path = tiny_ckpt
  module, variables = clip_resnet.build(TINY, pretrained=True, head="embed", weights=str(path),
                                        resolution=128)
  pos = np.asarray(variables["params"]["attnpool"]["positional_embedding"])
  native = state["visual.attnpool.positional_embedding"]
  assert pos.shape == (17, 256)
  np.testing.assert_array_equal(pos[0], native[0])  # the mean token's row is kept
  # Bicubic weights sum to one: a grid constant per channel stays so (edges included).
  flat = np.concatenate([native[:1], np.broadcast_to(native[1:2], (4, 256))])
  resized = clip_resnet._resize_positional_embedding(flat, 17)
  np.testing.assert_allclose(resized[1:], np.broadcast_to(native[1], (16, 256)), atol=1e-6)
  assert jax.jit(module.apply)(variables, _images(1)).shape == (1, TINY.embed_dim)
  with pytest.raises(ValueError, match="multiple of 32, got 100"):
    clip_resnet.build(TINY, pretrained=True, head="embed", weights=str(path), resolution=100)


def test_heads_random_init_and_missing_default_weights(tiny_ckpt, tmp_path, monkeypatch):
  _, path = tiny_ckpt
  with pytest.raises(ValueError, match="num_classes=N"):
    clip_resnet.build(TINY, pretrained=True, head="logits", weights=str(path))
  module, variables = clip_resnet.build(TINY, pretrained=True, head="logits", weights=str(path),
                                        resolution=RESOLUTION, num_classes=10, seed=3)
  assert jax.jit(module.apply)(variables, _images()).shape == (2, 10)
  assert variables["params"]["fc"]["kernel"].shape == (TINY.embed_dim, 10)
  kwargs = dict(pretrained=False, head="embed", resolution=RESOLUTION)
  # One random initialisation only: XLA needs seconds per compiled random draw on CPU.
  _, init = clip_resnet.build(TINY, seed=0, **kwargs)
  assert jax.tree.map(jnp.shape, init) == jax.tree.map(jnp.shape, clip_resnet.load_weights(path))
  np.testing.assert_array_equal(init["params"]["layer1_0"]["bn3"]["scale"], 0)
  assert np.asarray(init["params"]["conv1"]["kernel"]).std() > 0.1
  with pytest.raises(ValueError, match="unknown option"):
    clip_resnet.build(TINY, seed=0, width=16, **kwargs)
  monkeypatch.setenv("HOME", str(tmp_path))
  with pytest.raises(errors.UserError, match=r"RN101\.pt.*config\.teacher\.weights="):
    rrjax.models.load("clip_rn101", pretrained=True)
