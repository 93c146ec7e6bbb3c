"""The results store lives in :mod:`robustal.storage.store`; this module keeps the public import path."""
from robustal.storage.store import (
    ADDED_KEY_DEFAULTS,
    APPLICATION_ID,
    ENVIRONMENT_KEYS,
    FINAL_ATTACK_COLUMNS,
    NON_SEMANTIC_KEYS,
    SCHEMA,
    STAGE_COLUMNS,
    TABLES,
    StageRecord,
    Store,
    config_diff,
    folder_name,
    library_versions,
)

__all__ = ["ADDED_KEY_DEFAULTS", "APPLICATION_ID", "ENVIRONMENT_KEYS", "FINAL_ATTACK_COLUMNS", "NON_SEMANTIC_KEYS",
           "SCHEMA", "STAGE_COLUMNS", "StageRecord", "Store", "TABLES", "config_diff", "folder_name",
           "library_versions"]
