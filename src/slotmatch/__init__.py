"""slotmatch: unsupervised video object segmentation with slot attention.

A SlotContrast teacher (Manasyan et al., 2024) distilled into a lightweight SlotMatch student
(Grigore et al., 2025). See docs/ARCHITECTURE.md for how the modules fit together.
"""

__version__ = "0.1.0"
