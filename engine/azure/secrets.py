"""The Azure client secret, kept only in the OS keyring (Windows Credential Manager, macOS Keychain, a Secret
Service such as GNOME Keyring on Linux).

It is never written to settings.json, a log or any other file we own: a settings file gets copied, attached to bug
reports and synced, and a secret in it would leak. If no keyring is available we say so and what to install, and
refuse; we never fall back to a plaintext store on our own. ``keyring`` is imported inside the functions so the app
starts (and the planner works) without touching D-Bus or the keychain.
"""
from __future__ import annotations

import os
import sys

from ..errors import DistillError

SERVICE = "distill-studio"
BACKEND_ENV = "PYTHON_KEYRING_BACKEND"


class SecretStoreError(DistillError):
    """The secret could not be stored, read or deleted (the message says why and what to do)."""


class KeyringUnavailableError(SecretStoreError):
    """No OS keyring is usable here, so the secret cannot be kept safely."""


def _username(tenant_id: str, client_id: str) -> str:
    tenant_id, client_id = tenant_id.strip(), client_id.strip()
    if not tenant_id or not client_id:
        raise SecretStoreError("The client secret is stored under the tenant id and client id: "
                               "enter both on the Azure tab first.")
    return f"azure:{tenant_id}:{client_id}"


def _install_hint() -> str:
    if sys.platform.startswith("linux"):
        return ("On Linux the secret is kept by a Secret Service (GNOME Keyring or KWallet), which needs a D-Bus "
                "session: install gnome-keyring (e.g. 'sudo apt install gnome-keyring') and log in to a desktop "
                "session, or start the app under 'dbus-run-session' with gnome-keyring-daemon unlocked.")
    if sys.platform == "darwin":
        return "On macOS the login Keychain is used; check that it is unlocked and reachable."
    if sys.platform == "win32":
        return "On Windows the Credential Manager is used; check that it is reachable for this user."
    return "Install a keyring backend supported by the Python 'keyring' package for this system."


def _is_plaintext(backend) -> bool:
    """keyrings.alt's file stores are plaintext (or prompt on a terminal); never used unless chosen by hand."""
    return type(backend).__module__.startswith("keyrings.alt")


def _usable_backend():
    """The keyring backend to use, or None with the reason. A chainer is looked into, since an empty chainer (or
    one holding only plaintext stores) is no keyring at all."""
    import keyring
    from keyring.backends import chainer, fail

    backend = keyring.get_keyring()
    explicit = bool(os.environ.get(BACKEND_ENV))
    if isinstance(backend, fail.Keyring):
        return None, "No OS keyring is available."
    if isinstance(backend, chainer.ChainerBackend):
        inner = [b for b in backend.backends if explicit or not _is_plaintext(b)]
        if not inner:
            return None, "No OS keyring is available (only plaintext stores were found, and those are not used)."
    elif _is_plaintext(backend) and not explicit:
        return None, (f"The only keyring found ({type(backend).name}) does not encrypt secrets, so it is not used; "
                      f"set {BACKEND_ENV} to choose it on purpose.")
    return backend, ""


def keyring_status() -> tuple[bool, str]:
    """Whether a secret can be stored, and one or two sentences for the settings dialog: which keyring, or what is
    missing and what to install."""
    try:
        backend, why = _usable_backend()
    except Exception as exc:  # a broken backend must not break the settings dialog
        return False, f"The OS keyring could not be opened ({type(exc).__name__}: {exc}). {_install_hint()}"
    if backend is None:
        return False, f"{why} {_install_hint()} The client secret is never written to a plain file."
    note = " (chosen by hand; it does not encrypt)" if _is_plaintext(backend) else ""
    return True, f"Secrets are kept in the OS keyring: {type(backend).name}{note}."


def _require_backend():
    try:
        backend, why = _usable_backend()
    except Exception as exc:
        raise KeyringUnavailableError(f"The OS keyring could not be opened ({type(exc).__name__}). "
                                      f"{_install_hint()}") from exc
    if backend is None:
        raise KeyringUnavailableError(f"{why} {_install_hint()} The Azure client secret is not stored in a file.")
    return backend


def _wrap(action: str, exc: Exception) -> SecretStoreError:
    """A keyring error in our words. Only the exception's type and message, never arguments, so the secret cannot
    end up in the text."""
    from keyring.errors import NoKeyringError

    cls = KeyringUnavailableError if isinstance(exc, NoKeyringError) else SecretStoreError
    return cls(f"Could not {action} the Azure client secret in the OS keyring ({type(exc).__name__}: {exc}). "
               "If the keyring is locked, unlock it and try again.")


def store_client_secret(tenant_id: str, client_id: str, secret: str) -> None:
    """Store (or replace) the secret of the service principal ``client_id`` in ``tenant_id``."""
    from keyring.errors import KeyringError

    username = _username(tenant_id, client_id)
    if not secret:
        raise SecretStoreError("The client secret is empty; nothing was stored.")
    backend = _require_backend()
    try:
        backend.set_password(SERVICE, username, secret)
    except KeyringError as exc:
        raise _wrap("store", exc) from None


def load_client_secret(tenant_id: str, client_id: str) -> str | None:
    """The stored secret, or None when none is stored for this tenant and client."""
    from keyring.errors import KeyringError

    username = _username(tenant_id, client_id)
    backend = _require_backend()
    try:
        return backend.get_password(SERVICE, username)
    except KeyringError as exc:
        raise _wrap("read", exc) from None


def delete_client_secret(tenant_id: str, client_id: str) -> None:
    """Forget the secret; deleting one that is not there is not an error (the end state is what was asked)."""
    from keyring.errors import KeyringError, PasswordDeleteError

    username = _username(tenant_id, client_id)
    backend = _require_backend()
    try:
        backend.delete_password(SERVICE, username)
    except PasswordDeleteError:
        if backend.get_password(SERVICE, username) is not None:
            raise SecretStoreError("The OS keyring refused to delete the Azure client secret.") from None
    except KeyringError as exc:
        raise _wrap("delete", exc) from None
