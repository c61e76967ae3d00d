"""What a run reports: results rows, the report, the plots, the gallery.

Modules: `rows` (the results row: its one constructor and schema), `report` (results.json and
report.md), `plots` (the PNG figures), `gallery` (Figure 1 for a finished run). The last stage
of the run: nothing before it imports it (files are written through `rrjax.io`).
"""
