"""The one training engine every recipe calls: :func:`auralm.training.loop.fit`, checkpoints
(:mod:`.checkpoint`), schedules, the logger and the run settings (:mod:`.config`).

The engine knows no recipe: a recipe hands it a model, datasets and (optionally) a step function and a
validation function. Importing this package imports no torch.
"""
