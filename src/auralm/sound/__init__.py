"""S5: sound as discrete tokens (mel VQ-VAE tokenizer, vocoders, token GPT, GPT-VAE, evaluation).

Submodules are imported where used, so ``import auralm.sound`` stays light (no torch):

* :mod:`auralm.sound.mel` - log-mel frontend (:class:`MelConfig`, :class:`MelFrontend`)
* :mod:`auralm.sound.quantizer` - EMA vector quantiser
* :mod:`auralm.sound.tokenizer` - :class:`AudioTokenizer`, :class:`MelVQVAE`, :func:`load_tokenizer`
* :mod:`auralm.sound.vocoder` - :class:`GriffinLim`, HiFi-GAN, :func:`load_vocoder`
* :mod:`auralm.sound.data` - :func:`make_digit_corpus`, :func:`make_sound_events`
* :mod:`auralm.sound.evaluate` - judge accuracy, mel error, codebook usage, Frechet distance
* :mod:`auralm.sound.train_tokenizer`, :mod:`auralm.sound.train_vocoder` - the trainers
"""
