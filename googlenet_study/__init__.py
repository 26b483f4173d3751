"""googlenet-study: which way of fine-tuning a GoogLeNet-family network converges fastest in wall-clock time."""

__version__ = "0.1.0"
