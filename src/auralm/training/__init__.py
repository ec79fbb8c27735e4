"""The one training engine every recipe calls.

* :mod:`.loop`: :func:`~auralm.training.loop.fit` trains a recipe's :class:`~auralm.training.loop.Task`
  (resume, optimizers, schedule, accumulation, processes, caps, validation cadence, checkpoints, logs);
* :mod:`.checkpoint`: the one checkpoint writer (``OUT/checkpoints/step-N`` + ``OUT/latest``), RNG states;
* :mod:`.schedule`: the one warm-up + cosine/linear/constant schedule and the seeded data order;
* :mod:`.logger`: the one logger (train_log.jsonl + TensorBoard or wandb);
* :mod:`.config`: :class:`~auralm.training.config.OptimConfig` and :class:`~auralm.training.config.RunConfig`,
  the run settings every recipe's train config shares.

The engine knows no recipe (it imports only :mod:`auralm.core`). Importing this package imports no torch.
"""
