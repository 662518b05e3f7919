"""Deployment definitions: prefect.yaml generator (generate), the event bridge, local stack, ECS."""
