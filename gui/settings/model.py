"""The app's settings model lives in the engine (``distill azure`` reads the same workspace settings); re-exported
here for the GUI."""
from ...engine.settings import (  # noqa: F401
    CONFIG_DIR_ENV, MAX_RECENT, SETTINGS_VERSION, AzureSettings, Settings, config_dir, load_settings, migrate,
    save_settings, settings_path,
)
