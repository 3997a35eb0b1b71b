"""What a training node of an Azure ML job does before the engine starts: fetch the Hugging Face token for gated
models (Gemma, Llama) from the workspace's Key Vault with the compute cluster's managed identity.

The job names the secret, never its value (``DISTILL_HF_TOKEN_SECRET`` and ``DISTILL_KEY_VAULT_URI`` in its
environment variables), so the token is in no job spec, plan, log or event; it is set as ``HF_TOKEN`` in the
training process only, where transformers and huggingface_hub read it. The one-time set-up is the user's:
``az keyvault secret set --vault-name <the workspace's vault> --name hf-token --value hf_...`` and the role
*Key Vault Secrets User* on that vault for the cluster's identity (README, Azure set-up).
"""
from __future__ import annotations

import os

from ..errors import RunError

SECRET_ENV = "DISTILL_HF_TOKEN_SECRET"
VAULT_ENV = "DISTILL_KEY_VAULT_URI"


def vault_uri(key_vault_arm_id: str) -> str:
    """``/subscriptions/…/providers/Microsoft.KeyVault/vaults/NAME`` (a workspace's ``key_vault``) as its URI."""
    name = key_vault_arm_id.rstrip("/").rsplit("/", 1)[-1]
    return f"https://{name}.vault.azure.net/" if name else ""


def load_hf_token(credential=None, transport=None) -> bool:
    """Set ``HF_TOKEN`` from the Key Vault secret the job names; returns whether it did. A missing permission or
    secret stops the run with what to grant or create, before any model is downloaded."""
    name, vault = os.environ.get(SECRET_ENV, ""), os.environ.get(VAULT_ENV, "")
    if not name or os.environ.get("HF_TOKEN"):
        return False
    if not vault:
        raise RunError(f"{SECRET_ENV} names a secret but {VAULT_ENV} names no Key Vault to read it from")
    from azure.core.exceptions import HttpResponseError
    from azure.keyvault.secrets import SecretClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        # Azure ML gives the cluster's managed identity to the job; its client id is in DEFAULT_IDENTITY_CLIENT_ID
        credential = DefaultAzureCredential(managed_identity_client_id=os.environ.get("DEFAULT_IDENTITY_CLIENT_ID"))
    kw = {"transport": transport} if transport is not None else {}
    try:
        value = SecretClient(vault, credential, **kw).get_secret(name).value
    except HttpResponseError as exc:
        raise RunError(f"the Hugging Face token could not be read from Key Vault secret '{name}' in {vault} "
                       f"({exc.status_code}: {exc.reason}); create the secret, and give the compute cluster's "
                       "managed identity the role 'Key Vault Secrets User' on that vault") from None
    if not value:
        raise RunError(f"Key Vault secret '{name}' in {vault} is empty")
    os.environ["HF_TOKEN"] = value
    return True
