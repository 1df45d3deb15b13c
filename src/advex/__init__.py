"""advex: adversarial examples for PyTorch -- craft them, defend against them, certify."""

__version__ = "0.1.0"
