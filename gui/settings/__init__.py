from .model import AzureSettings, Settings, config_dir, load_settings, save_settings, settings_path

__all__ = ["AzureSettings", "Settings", "config_dir", "load_settings", "save_settings", "settings_path"]
