"""The one-pixel attack (Su, Vargas & Sakurai 2019): differential evolution over a few pixels
(``attack``), how candidates are scored (``scoring``: full, bf16 or incremental, chosen
once), and the exact incremental forward pass for a few pixels on a plain CNN
(``incremental``: window tables; ``crops``: convolutions of crops, for networks whose tables
would be too big)."""

from advex.attacks.onepixel.attack import OnePixel, apply_changes
from advex.attacks.onepixel.scoring import apply_pixels, write_pixels

__all__ = ["OnePixel", "apply_changes", "apply_pixels", "write_pixels"]
