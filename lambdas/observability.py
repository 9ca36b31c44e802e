"""The Logger, Tracer and Metrics every handler shares (configured by POWERTOOLS_* environment variables)."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

SERVICE = "questboard-backup"
NAMESPACE = "QuestBoardBackup"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# The engine logs through logging.getLogger("questboard_backup...."); give those records the same JSON
# format and correlation id as the handler's own lines.
copy_config_to_registered_loggers(source_logger=logger, include={"questboard_backup"})
