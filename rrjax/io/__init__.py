"""The run's plumbing for files, shared by every stage: nothing here knows what a run computes.

Modules: `files` (atomic writes, strict JSON, local paths or buckets), `metrics` (the
metrics.jsonl log of a training, resumable). Like `flax.io`, it sits below the stages:
config, training and outputs write through it; it imports none of them.
"""
