"""rrjax.config.schema: every field at the paper's values, experiment entries, Table 1 configs."""

from rrjax.config import experiments, schema, validate


def test_base_is_the_paper_setting_and_valid():
  c = schema.base()
  assert (c.teacher.name, c.train.lr, c.train.batch_size, c.train.steps) == (
      "clip_rn101", 3e-4, 256, 25 * 495)
  assert c.stages == ("train", "probe", "baseline", "transfer")
  assert not c.experiments
  validate.validate(c)


def test_experiment_nests_its_fields_and_sets_the_papers_baseline_epochs():
  entry = schema.experiment("noise(0.5)", extra={"train.loss": "mse", "stages": ("train",)})
  assert entry.to_dict() == {"train": {"corruption": "noise(0.5)", "loss": "mse"},
                             "eval": {"corruptions": ("noise(0.5)",)},
                             "baseline": {"epochs": 50}, "stages": ("train",)}
  assert schema.experiment("mask(0.9)").baseline.epochs == 25
  assert schema.experiment("blur(21,5)", ("blur(21,5)", "mask(0.9)")).eval.corruptions == (
      "blur(21,5)", "mask(0.9)")


def test_paper_config_is_one_experiment_with_the_optional_rows():
  c = schema.paper_config("mask(0.75)", "mask75")
  ((name, run),) = experiments.expand(c)
  assert (name, run.train.corruption, run.eval.corruptions) == ("mask75", "mask(0.75)",
                                                               ("mask(0.75)",))
  assert c.eval.restored and c.eval.zeroshot
