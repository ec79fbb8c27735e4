"""auralm: give language models ears.

The public API is kept light: importing :mod:`auralm` loads no model and touches no network.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
