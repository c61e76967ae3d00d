"""rrjax.outputs.plots: the severities the severity plot reads from specs."""

from rrjax.outputs import plots


def test_parse_severity():
  assert plots.parse_severity("mask(0.95)") == ("mask", 0.95)
  assert plots.parse_severity("blur(21,5)") == ("blur", 21.0)
  assert plots.parse_severity("noise(1e-1, 0.3)") == ("noise", 0.1)
  assert plots.parse_severity("identity") is None
  assert plots.parse_severity("mask(0.5)|noise(0.1)") is None
