"""The app's settings model lives in the engine (``distill azure`` reads the same workspace settings); re-exported
here for the GUI, with the one spelling rule the Settings dialog and the wizard share."""
from ...engine.settings import (  # noqa: F401
    CONFIG_DIR_ENV, MAX_RECENT, SETTINGS_VERSION, AzureSettings, Settings, config_dir, load_settings, migrate,
    save_settings, settings_path,
)


def normalise_region(text: str) -> str:
    """An Azure region as people write it ("East US 2") in the ARM spelling plans and prices use ("eastus2")."""
    return "".join(text.split()).lower()
