"""Lambda handlers: one thin Powertools function per Step Functions task; all logic is in questboard_backup."""
