"""The results store lives in :mod:`robustal.storage.store` (its tables and rows in
:mod:`robustal.storage.schema`); this module keeps the public import path."""
from robustal.storage.schema import (
    ADDED_KEY_DEFAULTS,
    APPLICATION_ID,
    ENVIRONMENT_KEYS,
    FINAL_ATTACK_COLUMNS,
    NON_SEMANTIC_KEYS,
    SCHEMA,
    STAGE_COLUMNS,
    TABLES,
    StageRecord,
    config_diff,
    library_versions,
)
from robustal.storage.store import Store, folder_name

__all__ = ["ADDED_KEY_DEFAULTS", "APPLICATION_ID", "ENVIRONMENT_KEYS", "FINAL_ATTACK_COLUMNS", "NON_SEMANTIC_KEYS",
           "SCHEMA", "STAGE_COLUMNS", "StageRecord", "Store", "TABLES", "config_diff", "folder_name",
           "library_versions"]
