"""Builders for the AWS Lambda layers; run `python -m layers.build` (see layers/README.md)."""
