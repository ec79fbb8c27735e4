"""Serving: an OpenAI-compatible HTTP API and a Gradio UI over the pipelines ``auralm.load()`` returns.

* :mod:`auralm.serve.config`: :class:`ServeConfig`, every limit with a safe default (its help is the
  ``auralm serve --help`` text).
* :mod:`auralm.serve.media`: request media (base64 audio, uploaded files, data-URL images) checked and
  decoded, with the limits applied before a sample is decoded where the header allows.
* :mod:`auralm.serve.batching`: :class:`Batcher`, one worker thread per model that groups concurrent
  requests with the same decoding settings into one pipeline call.
* :mod:`auralm.serve.service`: :class:`Service`, the loaded models and what they answer; the API and the
  UI both call it (one code path).
* :mod:`auralm.serve.openai_api`: the FastAPI app (``/v1/models``, ``/v1/chat/completions``,
  ``/v1/audio/transcriptions``, ``/v1/audio/speech``, ``/health``), its guard middleware (API key, body
  size, admission queue) and OpenAI-shaped errors.
* :mod:`auralm.serve.ui`: the Gradio Blocks, mounted at ``/ui``.
* :mod:`auralm.serve.cli`: ``auralm serve`` and ``auralm ui``.

Nothing in the library imports this package; it imports the recipes' pipelines (through ``auralm.load``)
and the parts they expose. Importing it imports nothing heavy: torch comes with the first model,
FastAPI with :mod:`~auralm.serve.openai_api`, Gradio only with the UI.
"""
