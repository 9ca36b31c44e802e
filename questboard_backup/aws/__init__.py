"""AWS adapters the engine uses (KMS key wrapping, SNS alerts, EventBridge Scheduler); boto3 lives here and in storage.s3*."""
