"""Settings › Azure › Test connection: sign in with the method chosen and read the workspace, before any plan is
submitted, so a wrong id, a missing role or an expired client secret is found where it is typed.

It runs the same clients a submission does (``engine.azure.client.Azure``: azure-identity's credential, azure-ai-ml's
``MLClient``, the same retries and timeouts) against the values in the dialog, not the saved settings. A client
secret typed but not yet stored is used for this one sign-in and never written anywhere. No Qt here: the dialog runs
:func:`test_connection` on a worker.
"""
from __future__ import annotations

from ...engine.errors import AzureError


def test_connection(values: dict[str, str], typed_secret: str = "") -> str:
    """Sign in and read the workspace named by ``values`` (the keys of ``AzureSettings``); a sentence saying what
    was reached, or :class:`AzureError` with what failed and what to do."""
    from ...engine.azure.client import Azure, Workspace, client_kwargs, explain, transport, with_timeouts

    missing = [label for key, label in (("subscription_id", "subscription id"), ("resource_group", "resource group"),
                                        ("workspace", "workspace")) if not values.get(key, "").strip()]
    sign_in = values.get("sign_in", "browser")
    if sign_in == "service-principal":
        missing += [label for key, label in (("tenant_id", "tenant id"), ("client_id", "client id"))
                    if not values.get(key, "").strip()]
    if missing:
        raise AzureError(f"Cannot test the connection: {', '.join(missing)} missing; enter them above")
    ws = Workspace(subscription_id=values["subscription_id"].strip(), resource_group=values["resource_group"].strip(),
                   workspace=values["workspace"].strip(), region=values.get("region", "").strip(), sign_in=sign_in,
                   tenant_id=values.get("tenant_id", "").strip(), client_id=values.get("client_id", "").strip())
    cred = None
    t = with_timeouts(transport())
    if sign_in == "service-principal" and typed_secret:
        from azure.identity import ClientSecretCredential

        cred = ClientSecretCredential(ws.tenant_id, ws.client_id, typed_secret, **client_kwargs(t))
    az = Azure(ws, cred=cred, t=t)
    try:
        found = az.fresh_on_401(az.ml.workspaces.get, ws.workspace)
    except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one message with what to do
        raise explain(exc, f"reading workspace {ws.workspace}", ws) from None
    finally:
        az.credential.close()
    how = {"browser": "the browser sign-in", "azure-cli": "the Azure CLI account",
           "service-principal": f"the service principal {ws.client_id}"}.get(sign_in, sign_in)
    location = (getattr(found, "location", "") or "").strip()
    text = (f"Connected: signed in with {how} and reached workspace {ws.workspace} in resource group "
            f"{ws.resource_group}" + (f" ({location})" if location else "") + ".")
    near = location.replace(" ", "").lower()
    if near and ws.region and near != ws.region:
        text += (f" Note: the default region is {ws.region}, but the workspace's clusters are created in {near}; "
                 f"plans are priced for {ws.region}. Set the default region to {near} for prices that match.")
    return text
