"""Configuration kept in AWS (SSM Parameter Store and Secrets Manager), backed up as one encrypted stream."""

from questboard_backup.sources.ssmconfig.component import SsmConfigComponent

__all__ = ["SsmConfigComponent"]
