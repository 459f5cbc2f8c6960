"""An ``AzureNamedKeyCredential`` whose ``update()`` the queue and blob clients honour.

``azure-storage-queue`` and ``azure-storage-blob`` copy the account key out of an
``AzureNamedKeyCredential`` when a client is made, so a key rotated later with
``credential.update()`` is ignored until the process makes new clients (``azure-data-tables``,
SAS and token credentials read theirs on every request). ``live_shared_key`` gives those SDKs
their own shared-key signing policy reading the name and key from the credential at each
request: the signing stays the SDK's.

The policy class lives in each SDK's ``_shared.authentication`` module (no public name); the
SDK accepts an instance of it as a client's credential.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.lru_cache(maxsize=None)
def _live_policy(policy_class: type) -> type:
    class LiveSharedKey(policy_class):  # type: ignore[misc, valid-type]
        """The SDK's shared-key signing, with the key read from an ``AzureNamedKeyCredential`` per request."""

        def __init__(self, credential: Any) -> None:
            self._named = credential
            super(policy_class, self).__init__()  # the SansIOHTTPPolicy's: name and key are read live

        @property
        def account_name(self) -> str:
            return self._named.named_key.name

        @property
        def account_key(self) -> str:
            return self._named.named_key.key

    LiveSharedKey.__qualname__ = f"Live{policy_class.__name__}"
    return LiveSharedKey


def live_shared_key(credential: Any, service: str) -> Any:
    """``credential`` as the ``service`` SDK ("queue" or "blob") should get it: an ``AzureNamedKeyCredential``
    becomes a signing policy that follows its ``update()``; any other credential is returned as it is."""
    from azure.core.credentials import AzureNamedKeyCredential

    if not isinstance(credential, AzureNamedKeyCredential):
        return credential
    if service == "queue":
        from azure.storage.queue._shared.authentication import SharedKeyCredentialPolicy
    elif service == "blob":
        from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy
    else:
        raise ValueError(f"no shared-key policy for {service!r}")
    return _live_policy(SharedKeyCredentialPolicy)(credential)


__all__ = ["live_shared_key"]
