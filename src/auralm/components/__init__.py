"""Neural parts that know no recipe: encoders, connectors, LMs, CTC, codecs and decoding."""
