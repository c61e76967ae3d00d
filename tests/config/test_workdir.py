"""rrjax.config.workdir: a workdir belongs to one config; reruns resume, others are refused."""

import json
import os
import re

import pytest

from rrjax import errors, run
from rrjax.config import workdir as workdir_lib
from tests import helpers


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  return helpers.make_folder(tmp_path_factory.mktemp("images"))


def test_workdir_under_a_file_is_refused(folder, tmp_path):
  (tmp_path / "afile").write_text("a file, not a directory")
  for workdir, reason in ((tmp_path / "afile" / "sub", "Not a directory"),
                          (tmp_path / "afile", "File exists")):
    with pytest.raises(errors.UserError) as info:
      run.train_and_evaluate(helpers.tiny_config(folder), str(workdir))
    assert str(info.value) == (f"workdir {workdir}: cannot write there ({reason}); pass a "
                               "writable directory as --workdir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a 0o500 directory regardless")
def test_read_only_workdir_is_refused(folder, tmp_path):
  workdir = tmp_path / "readonly"
  workdir.mkdir(mode=0o500)
  with pytest.raises(errors.UserError) as info:
    run.train_and_evaluate(helpers.tiny_config(folder), str(workdir))
  assert str(info.value) == (f"workdir {workdir}: cannot write there (Permission denied); pass "
                             "a writable directory as --workdir")


def _claimed(folder, workdir, **overrides) -> bytes:
  """`workdir` claimed by the tiny config with `overrides`, with an earlier results.json."""
  config = helpers.tiny_config(folder, **overrides)
  workdir_lib.claim_workdir(config, str(workdir))
  return helpers.write_results(str(workdir), config)


def test_workdir_of_another_config_is_refused_and_left_alone(folder, tmp_path):
  earlier = _claimed(folder, tmp_path)
  stored = (tmp_path / "config.json").read_bytes()
  for overrides, field, before, now in (
      ({"train.lr": 0.01}, "train.lr", "0.0003", "0.01"),
      ({"eval.batch_size": 64}, "eval.batch_size", "32", "64"),
      ({"train.corruption": "mask(0.9)"}, "experiments.mask.train.corruption", '"mask(0.5)"',
       '"mask(0.9)"')):
    with pytest.raises(errors.UserError) as info:
      run.train_and_evaluate(helpers.tiny_config(folder, **overrides), str(tmp_path))
    assert str(info.value) == (
        f"workdir {tmp_path} holds a run of a different config ({tmp_path}/config.json): "
        f"config.{field} was {before}, now {now}. Use a fresh --workdir, so that the two runs' "
        "checkpoints and results do not mix (fields a rerun may change: train.log_every, "
        "train.checkpoint_every, baseline.log_every, baseline.checkpoint_every, stages, "
        "experiments.*.stages, only)")
  assert (tmp_path / "results.json").read_bytes() == earlier
  assert (tmp_path / "config.json").read_bytes() == stored


def test_rerun_may_change_bookkeeping_fields(folder, tmp_path):
  _claimed(folder, tmp_path)
  rerun = helpers.tiny_config(folder, train__log_every=7, train__checkpoint_every=0,
                              baseline__checkpoint_every=3, stages=("train",))
  workdir_lib.claim_workdir(rerun, str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["train"]["log_every"] == 7


def test_run_without_config_json_is_identified_by_its_results(folder, tmp_path):
  helpers.write_results(str(tmp_path), helpers.tiny_config(folder))
  with pytest.raises(errors.UserError, match=re.escape(
      f"({tmp_path}/results.json): config.seed was 0, now 1.")):
    workdir_lib.claim_workdir(helpers.tiny_config(folder, seed=1), str(tmp_path))


def test_failed_start_does_not_block_a_fixed_config(folder, tmp_path):
  """A start that failed before computing anything left only config.json: nothing to mix."""
  workdir_lib.claim_workdir(helpers.tiny_config(folder, data__name="imagefolder:/typo"),
                            str(tmp_path))
  workdir_lib.claim_workdir(helpers.tiny_config(folder), str(tmp_path))
  assert json.loads((tmp_path / "config.json").read_text())["data"]["name"].endswith(folder)


def test_rerun_may_choose_an_experiments_own_stages(folder, tmp_path):
  config = helpers.tiny_config(folder)
  config.experiments.mask.stages = ("train", "probe")
  workdir_lib.claim_workdir(config, str(tmp_path))
  helpers.write_results(str(tmp_path), config)
  config.experiments.mask.stages = ("train",)
  workdir_lib.claim_workdir(config, str(tmp_path))  # Accepted: it computes nothing else.
  del config.experiments.mask["stages"]
  workdir_lib.claim_workdir(config, str(tmp_path))  # Removed: the config's own stages.
  config.experiments.mask.train.corruption = "mask(0.9)"
  with pytest.raises(errors.UserError, match="experiments.mask.train.corruption was"):
    workdir_lib.claim_workdir(config, str(tmp_path))


def test_a_finished_run_is_one_of_the_same_config_and_the_same_experiments(folder, tmp_path):
  c = helpers.tiny_config(folder)
  assert not workdir_lib.finished(c, str(tmp_path))  # Nothing there.
  stored = json.loads(json.dumps(c.to_dict()))
  (tmp_path / "results.json").write_text(json.dumps({"config": stored, "rows": []}))
  assert workdir_lib.finished(c, str(tmp_path))
  c.train.log_every = 7  # A field a rerun may change.
  assert workdir_lib.finished(c, str(tmp_path))
  c.only = "mask"  # What runs: its results would lack the other experiments' rows.
  assert not workdir_lib.finished(c, str(tmp_path))
  c.only, c.train.lr = "", 1.0
  assert not workdir_lib.finished(c, str(tmp_path))
