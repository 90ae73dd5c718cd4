"""Secrets at rest: Fernet encryption with a key derived from config (or a Key Vault secret)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

from core.errors import Invalid


class SecretBox:
    """Encrypts credentials before they reach the store; they are never decrypted for display."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as e:
            raise Invalid(
                "a stored secret cannot be decrypted with the configured key; "
                "was CASTIEL_SECRET_KEY changed? re-enter the credential"
            ) from e
