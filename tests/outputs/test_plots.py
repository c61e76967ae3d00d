"""rrjax.outputs.plots: severities read from specs, the panels of Figures 3 and 6."""

from rrjax.outputs import plots, rows


def test_parse_severity():
  assert plots.parse_severity("mask(0.95)") == ("mask", 0.95)
  assert plots.parse_severity("blur(21,5)") == ("blur", 21.0)
  assert plots.parse_severity("noise(1e-1, 0.3)") == ("noise", 0.1)
  assert plots.parse_severity("identity") is None
  assert plots.parse_severity("mask(0.5)|noise(0.1)") is None


def _row(method, ev, fraction, top1, loss="st", train="mask(0.9)"):
  return rows.make_row(experiment="e", loss=loss, method=method, dataset="d",
                       train_corruption=train, eval_corruption=ev, label_fraction=fraction,
                       draws=[top1, top1 + 1])


def _figure(monkeypatch, plot, rows_, tmp_path):
  saved = []
  monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
  assert plot(rows_, str(tmp_path / "p.png"))
  (fig,) = saved
  return [ax for ax in fig.axes if ax.get_visible()]


def test_label_fraction_panel_per_operator_with_the_ceiling_dashed(monkeypatch, tmp_path):
  fractions = (0.01, 0.1, 1.0)
  rows_ = ([_row("teacher_clean", "identity", f, 80 + f) for f in fractions]
           + [_row(m, "mask(0.9)", f, 50 + f) for m in ("teacher_corrupted", "ours", "baseline")
              for f in fractions])
  (ax,) = _figure(monkeypatch, plots.plot_label_fraction, rows_, tmp_path)  # No identity panel.
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels == ["teacher (clean, ceiling)", "teacher (corrupted)", "ours", "baseline"]
  lines = {c.get_label(): c.lines[0] for c in ax.containers}  # Each method's error bars.
  dashed = [name for name, line in lines.items() if line.get_linestyle() == "--"]
  assert dashed == ["teacher (clean, ceiling)"]
  assert list(lines[dashed[0]].get_ydata()) == [80.51, 80.6, 81.5]
  assert ax.get_title() == "eval mask(0.9)"


def test_loss_ablation_is_one_panel_with_a_line_per_loss(monkeypatch, tmp_path):
  evals = ("mask(0.5)", "mask(0.9)", "mask(0.95)")
  rows_ = [_row("ours", ev, 1.0, 60 + i + 10 * j, loss=loss, train="mask(0.5,0.95)")
           for j, loss in enumerate(("st", "mse")) for i, ev in enumerate(evals)]
  (ax,) = _figure(monkeypatch, plots.plot_per_loss, rows_, tmp_path)
  lines = {c.get_label(): c.lines[0] for c in ax.containers}
  assert sorted(lines) == ["mse", "st"]
  assert list(lines["st"].get_xdata()) == [0.5, 0.9, 0.95]  # Severity on the x axis.
  assert list(lines["mse"].get_ydata()) == [70.5, 71.5, 72.5]


def test_validation_curves_one_line_per_training(monkeypatch, tmp_path):
  logged = [{"experiment": "mask90", "run": f"baseline lr={lr}", "step": step, "val_top1": acc}
            for lr, curve in (("1e-4", (10.0, 30.0)), ("1e-3", (20.0, 25.0)))
            for step, acc in zip((40, 80), curve)]
  logged.append({"run": "student", "step": 40, "loss": 2.0})  # No val_top1: not plotted.
  (ax,) = _figure(monkeypatch, plots.plot_validation, logged, tmp_path)
  lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
  assert lines == {"mask90: baseline lr=1e-4": [10.0, 30.0],
                   "mask90: baseline lr=1e-3": [20.0, 25.0]}
  assert not plots.plot_validation(logged[-1:], str(tmp_path / "none.png"))
