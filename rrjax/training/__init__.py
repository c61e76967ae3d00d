"""Training: the robust student and the supervised baseline, resumable.

Modules: `state` (the train state, optimisers, one update), `loop` (the skeleton both trainings
share: restore, fit with logging, checkpoints and guards), `student` (the student's jitted
InfoNCE step and its training), `baseline` (end-to-end fine-tuning on corrupted images),
`teacher_cache` (teacher embeddings cached on disk), `checkpoint` (Orbax checkpoints).
"""
