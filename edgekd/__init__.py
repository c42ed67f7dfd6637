"""edgekd: distil a teacher into a small student, quantize, export and profile it on a device."""

__version__ = "0.2.0"
