"""Fake Microsoft identity platform routes (OpenID configuration and the v2.0 token endpoint) for msal.

Mixed into the Dynamics 365 and Microsoft Graph fakes so msal's tenant discovery and token
requests (client credentials, refresh token and authorization code grants) hit the same local
HTTPS server. The authorize route consents at once and redirects back with a code (or with
``error=access_denied`` when ``oauth.deny_consent`` is set).
Errors use the AADSTS shapes msal parses (``error``, ``error_description``, ``error_codes``).
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.vendors.server import FakeVendor, Request, Response, route

TENANT = "contoso.onmicrosoft.com"


class AzureAdMixin(FakeVendor):
    tenant = TENANT

    @route("GET", r"/(?P<tenant>[^/]+)/v2.0/\.well-known/openid-configuration")
    def openid_configuration(self, req: Request) -> Response:
        tenant = req.params["tenant"]
        base = f"{self.url}/{tenant}"
        return Response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "tenant_region_scope": "EU",
            },
        )

    def _aad_error(self, status: int, error: str, code: int, text: str) -> Response:
        return Response(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0000\r\nCorrelation ID: 0000",
                "error_codes": [code],
                "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            },
        )

    @route("GET", r"/(?P<tenant>[^/]+)/oauth2/v2.0/authorize")
    def aad_authorize(self, req: Request) -> Response:
        return self.consent_redirect(req)

    @route("POST", r"/(?P<tenant>[^/]+)/oauth2/v2.0/token")
    def aad_token(self, req: Request) -> Response:
        form = req.form()
        if not self.oauth.client_ok(form.get("client_id"), form.get("client_secret")):
            return self._aad_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
        grant = form.get("grant_type")
        body: dict[str, Any] = {"token_type": "Bearer", "expires_in": self.oauth.expires_in}
        body["ext_expires_in"] = self.oauth.expires_in
        if grant == "client_credentials":
            if self.oauth.revoked:
                return self._aad_error(
                    401, "invalid_client", 7000222, "The provided client secret keys for app are expired."
                )
            self.oauth.client_credential_grants += 1
            body["access_token"] = self.oauth.issue()
            return Response(200, body)
        if grant == "refresh_token":
            issued = self.oauth.refresh(form.get("refresh_token"))
            if issued is None:
                return self._aad_error(
                    400,
                    "invalid_grant",
                    700082,
                    "The refresh token has expired due to inactivity.",
                )
            body["access_token"], body["refresh_token"] = issued
            body["scope"] = form.get("scope", "")
            return Response(200, body)
        if grant == "authorization_code":
            redeemed = self.redeem_code(form)
            if isinstance(redeemed, str):
                return self._aad_error(400, "invalid_grant", *{
                    "code": (70008, "The provided authorization code or refresh token has expired or was used."),
                    "redirect": (50011, "The redirect URI specified in the request does not match."),
                    "pkce": (50148, "The code_verifier does not match the code_challenge supplied in the "
                                    "authorization request for PKCE."),
                    "client": (7000215, "Invalid client secret provided."),
                }[redeemed])
            body["access_token"], body["refresh_token"] = redeemed
            body["scope"] = form.get("scope", "")
            return Response(200, body)
        return self._aad_error(400, "unsupported_grant_type", 70003, f"grant {grant} is not supported")
