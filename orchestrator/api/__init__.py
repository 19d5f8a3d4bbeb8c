"""The HTTP side: the only package that speaks HTTP to ArcGIS Enterprise.

`transport` (the session, capped reads, the one aiohttp-to-error mapping, each deployment's `Link`),
`auth` (one sign-in path, one token cache), `answers` (what an answer means, pure) and `client` (the
ArcGIS resources a run uses, behind `dr.DeploymentApi`).
"""

from orchestrator.api.answers import envelope_error, interpret
from orchestrator.api.client import ApiContext, ArcGISClient, OnRetry, open_api_context, open_clients

__all__ = [
    "ApiContext",
    "ArcGISClient",
    "OnRetry",
    "envelope_error",
    "interpret",
    "open_api_context",
    "open_clients",
]
