"""Uploads kept in an S3 bucket, backed up as one tar stream and restored through a staging prefix."""

from questboard_backup.sources.s3uploads.component import S3UploadsComponent

__all__ = ["S3UploadsComponent"]
