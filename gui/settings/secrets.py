"""The Azure client secret in the OS keyring: the engine's module (``distill azure`` signs in with it too)."""
from ...engine.azure.secrets import *  # noqa: F401,F403
from ...engine.azure.secrets import (  # noqa: F401
    SERVICE, KeyringUnavailableError, SecretStoreError, _usable_backend, delete_client_secret, keyring_status,
    load_client_secret, store_client_secret,
)
