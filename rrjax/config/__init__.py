"""The run's config: its fields, its experiments, its checks, and the workdir it owns.

Modules: `schema` (every field at the paper's values, experiment entries, the Table 1
configs), `embedded` (the embedded default's values: EfficientNet-Lite0 on Fashion-MNIST),
`smoke` (the smoke variant of any config), `experiments` (sub-runs and command-line
overrides), `validate` (every field checked before any compute), `inputs` (every dataset and
weights file the run reads, present or fetchable, before any compute), `workdir` (a workdir
belongs to one config). The files in `configs/` build on `schema`, `embedded` and `smoke`.
"""
