"""The CDK deployment of Quest Board Backup: one construct per capability, composed by a thin stack."""
