"""rrjax.training.teacher_cache: teacher embeddings written once, read back, as in the step."""

import os

import jax
import numpy as np
import pytest

from rrjax import data, errors, models
from rrjax.training import student as student_lib
from rrjax.training import teacher_cache
from tests import helpers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


def test_teacher_cache_is_written_once_and_matches_the_teacher(folder, tmp_path, monkeypatch):
  c = helpers.tiny_config(folder)
  c.train.teacher = "cache"
  c.train.cache_dir = str(tmp_path / "cache")
  helpers.train_student(c, str(tmp_path / "run1"))
  (path,) = [os.path.join(c.train.cache_dir, f) for f in os.listdir(c.train.cache_dir)]
  cached = np.load(path)
  teacher, teacher_vars = models.load_from_config(c.teacher)
  images, _ = helpers.eval_arrays(data.load(c.data.name, c.data.train_split))
  np.testing.assert_allclose(cached, teacher.apply(teacher_vars, images), atol=1e-5)
  # A second run reads the file instead of computing and writing it again.
  monkeypatch.setattr(student_lib.teacher_cache, "compute",
                      lambda *a, **k: pytest.fail("teacher cache recomputed"))
  helpers.train_student(c, str(tmp_path / "run2"))


def test_teacher_in_step_and_cache_agree_without_augmentation(folder, tmp_path):
  """With augmentation off both modes see the same views, so training is the same."""
  c = helpers.tiny_config(folder)
  c.data.augment = False
  in_step = helpers.train_student(c, str(tmp_path / "step"))
  c.train.teacher, c.train.cache_dir = "cache", str(tmp_path / "cache")
  cached = helpers.train_student(c, str(tmp_path / "cache_run"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), in_step, cached)


@pytest.mark.parametrize("content, problem", [
    (b"not a numpy file", "cannot read it"),
    ("wrong shape", "float32 (3, 2), not float32 [5, D]"),
])
def test_a_cache_that_cannot_be_used_is_one_line_naming_it(tmp_path, content, problem):
  path = tmp_path / "teacher_x.npy"
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    np.save(path, np.zeros((3, 2), np.float32))
  with pytest.raises(errors.UserError) as info:
    teacher_cache._read(str(path), 5)
  assert str(info.value).startswith(f"teacher cache {path}: ")
  assert problem in str(info.value) and str(info.value).endswith("delete it and rerun")
