"""Labels, manifests, importers, photo decoding, datasets, splits and the synthetic renderer.

This package imports no model code.
"""

from scalpscan.data.vocab import CONDITIONS, MANIFEST_COLUMNS, STAGES, VIEWS, ZONES

__all__ = ["CONDITIONS", "STAGES", "VIEWS", "ZONES", "MANIFEST_COLUMNS"]
