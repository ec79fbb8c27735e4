"""Core: config dataclasses, errors, atomic I/O, progress bars and constants. Imports no torch."""
