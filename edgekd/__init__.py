"""edgekd: distil a teacher into a small student, quantize it, export it and profile it on a device."""

__version__ = "0.1.0"
