"""The declarative pipeline configuration (``hsi.yaml``): models (:mod:`hsi.config.models`) and
validated loading with file/line/field errors (:mod:`hsi.config.loading`).

Everything has an embedded default: local directory storage and a static catalog under
``./hsi-data``, threads as the task runner. A configuration file only says what differs.
"""

from hsi.config.loading import ConfigIssue, check_config, load_config, mask_secrets, validate_text
from hsi.config.models import (
    DEFAULT_DATA_DIR,
    ArchiveLimitsConfig,
    CatalogAuth,
    CatalogConfig,
    EcsConfig,
    EngineConfig,
    InputConfig,
    PipelineConfig,
    ProductRun,
    S3Access,
    SourceConfig,
    StorageConfig,
)

__all__ = [
    "DEFAULT_DATA_DIR", "ArchiveLimitsConfig", "CatalogAuth", "CatalogConfig", "ConfigIssue", "EcsConfig", "EngineConfig", "InputConfig",
    "PipelineConfig", "ProductRun", "S3Access", "SourceConfig", "StorageConfig", "check_config", "load_config",
    "mask_secrets", "validate_text",
]  # fmt: skip
