"""Vendor connectors behind one interface (connectors.base); shared OAuth2, pagination, retry and webhooks."""
