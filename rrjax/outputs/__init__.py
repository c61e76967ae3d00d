"""What a run writes: files, metrics, results rows, the report, the plots, the gallery.

Modules: `files` (atomic writes, strict JSON), `metrics` (the metrics.jsonl log), `rows` (the
results row: its one constructor and schema), `report` (results.json and report.md), `plots`
(the PNG figures), `gallery` (Figure 1 for a finished run). Training imports only `files` and
`metrics`, the plumbing; nothing before the outputs imports the report or the plots.
"""
