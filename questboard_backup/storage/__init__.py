"""Storage backends: where backup sets live. One small protocol, one file per backend."""

from questboard_backup.storage.base import ObjectWriter, Storage

__all__ = ["ObjectWriter", "Storage"]
