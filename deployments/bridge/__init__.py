"""The S3/SNS/SQS -> Prefect event bridge (see README.md): a long-running SQS consumer
(:mod:`hsi_pipeline.deployments.bridge.consumer`) and an SQS-triggered Lambda handler
(:mod:`hsi_pipeline.deployments.bridge.lambda_handler`). The pure parsing/mapping logic lives in :mod:`hsi.bridge`."""
