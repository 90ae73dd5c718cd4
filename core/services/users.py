"""Console users: accounts, passwords (bcrypt), lockout, TOTP MFA, roles, sessions and SSO mapping."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import bcrypt
import pyotp

from core import clock
from core.adapters.store import PLATFORM, Doc, DocumentStore
from core.crypto import SecretBox
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.services.access import ADMIN, ROLE_LABELS, ROLES, Principal, require
from core.services.audit import AuditLog
from core.services.tenants import TenantService

ISSUER = "Castiel Console"
_BAD_LOGIN = "wrong email or password"  # one message for unknown user and wrong password


def user_id_for(email: str) -> str:
    return "u-" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:20]


def _check_password_strength(password: str) -> None:
    if len(password) < 10:
        raise Invalid("passwords need at least 10 characters")


@dataclass(frozen=True)
class LoginStep:
    """Outcome of a password check: done, or a second factor still to give (``totp``/``enrol``)."""

    user_id: str
    next: str  # "done" | "totp" | "enrol"
    principal: Principal | None = None


class UserService:
    CONTAINER = "users"

    def __init__(
        self,
        store: DocumentStore,
        audit: AuditLog,
        tenants: TenantService,
        box: SecretBox,
        lockout_attempts: int = 5,
        lockout_minutes: int = 15,
    ) -> None:
        self.store, self.audit, self.tenants, self.box = store, audit, tenants, box
        self.lockout_attempts, self.lockout_minutes = lockout_attempts, lockout_minutes

    # reading -----------------------------------------------------------------------------
    def _get(self, user_id: str) -> Doc:
        return self.store.get(self.CONTAINER, PLATFORM, user_id)

    @staticmethod
    def principal_of(user: Doc) -> Principal:
        return Principal(
            user_id=user["id"],
            email=user["email"],
            role=user["role"],
            tenant_id=user.get("homeTenant"),
            name=user.get("name", ""),
        )

    @staticmethod
    def public(user: Doc) -> Doc:
        """A user record without secrets, for display."""
        hidden = {"passwordHash", "mfaSecret", "mfaPending", "_etag"}
        return {k: v for k, v in user.items() if k not in hidden}

    def list(self, principal: Principal, tenant_id: str | None = None) -> list[Doc]:
        require(principal, tenant_id, {ADMIN})
        rows = self.store.query(self.CONTAINER, PLATFORM, order_by="email")
        if tenant_id:
            rows = [r for r in rows if r.get("homeTenant") == tenant_id]
        return [self.public(r) for r in rows]

    def count(self) -> int:
        return self.store.count(self.CONTAINER, PLATFORM)

    # creating ----------------------------------------------------------------------------
    def create(
        self,
        principal: Principal,
        email: str,
        role: str,
        tenant_id: str | None,
        name: str = "",
        password: str | None = None,
        reason: str = "",
        source: str = "local",
    ) -> tuple[Doc, str | None]:
        """Create an account; returns it and the generated one-time password when none was given."""
        require(principal, tenant_id, {ADMIN})
        email = email.strip().lower()
        if "@" not in email or len(email) > 254:
            raise Invalid(f"{email!r} is not an email address")
        if role not in ROLES:
            raise Invalid(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
        if role == ADMIN and tenant_id is not None:
            raise Invalid("admins are platform-wide: leave the tenant empty for an admin")
        if tenant_id is not None:
            self.tenants.get(principal, tenant_id)  # NotFound with a clear message
        generated = None
        if source == "local":
            if password is None:
                generated = password = secrets.token_urlsafe(12)
            _check_password_strength(password)
        doc = {
            "id": user_id_for(email),
            "tenantId": PLATFORM,
            "email": email,
            "name": name.strip() or email.split("@")[0],
            "role": role,
            "homeTenant": tenant_id,
            "source": source,
            "passwordHash": bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode() if password else None,
            "mustChangePassword": generated is not None,
            "active": True,
            "failedLogins": 0,
            "lockedUntil": None,
            "mfaEnrolled": False,
            "mfaSecret": None,
            "sessionVersion": 1,
            "createdAt": clock.iso(),
            "lastLoginAt": None,
        }
        try:
            created = self.store.create(self.CONTAINER, doc)
        except Conflict:
            raise Conflict(f"a user with email {email} already exists") from None
        self.audit.record(
            principal,
            tenant_id,
            "user.create",
            f"user:{email}",
            reason,
            after={"role": role, "tenant": tenant_id, "source": source},
        )
        return self.public(created), generated

    # logging in --------------------------------------------------------------------------
    def _mfa_required(self, user: Doc) -> bool:
        if user.get("source") != "local":
            return False
        if user.get("mfaEnrolled"):
            return True
        home = user.get("homeTenant")
        return bool(home) and self.tenants.settings(str(home)).mfa_required

    def _note_failure(self, user: Doc, why: str) -> None:
        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            fails = int(doc.get("failedLogins") or 0) + 1
            doc["failedLogins"] = fails
            if fails >= self.lockout_attempts:
                doc["lockedUntil"] = clock.iso(clock.now() + timedelta(minutes=self.lockout_minutes))
                doc["failedLogins"] = 0
            return doc

        after = self.store.update(self.CONTAINER, PLATFORM, user["id"], change)
        locked = bool(after and after.get("lockedUntil") and after["lockedUntil"] > clock.iso())
        actor = self.principal_of(user)
        self.audit.record(actor, user.get("homeTenant"), "login.failed", f"user:{user['email']}", why)
        if locked:
            self.audit.record(
                actor,
                user.get("homeTenant"),
                "user.locked",
                f"user:{user['email']}",
                f"{self.lockout_attempts} failed logins",
            )

    def _check_usable(self, user: Doc) -> None:
        if not user.get("active"):
            raise Forbidden("this account is deactivated; ask an admin")
        locked = user.get("lockedUntil")
        if locked and locked > clock.iso():
            until = clock.parse(locked).strftime("%H:%M UTC")
            raise Forbidden(
                f"this account is locked after {self.lockout_attempts} failed logins; try again after {until}"
            )

    def authenticate(self, email: str, password: str) -> LoginStep:
        user = self.store.get_or_none(self.CONTAINER, PLATFORM, user_id_for(email or ""))
        if user is None or user.get("source") != "local" or not user.get("passwordHash"):
            bcrypt.checkpw(b"x", bcrypt.hashpw(b"y", bcrypt.gensalt(4)))  # similar timing either way
            raise Invalid(_BAD_LOGIN)
        self._check_usable(user)
        if not bcrypt.checkpw(password.encode(), user["passwordHash"].encode()):
            self._note_failure(user, "wrong password")
            raise Invalid(_BAD_LOGIN)
        if self._mfa_required(user):
            return LoginStep(user["id"], "totp" if user.get("mfaEnrolled") else "enrol")
        return LoginStep(user["id"], "done", self._succeed(user))

    def _succeed(self, user: Doc) -> Principal:
        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc.update(failedLogins=0, lockedUntil=None, lastLoginAt=clock.iso())
            return doc

        fresh = self.store.update(self.CONTAINER, PLATFORM, user["id"], change) or user
        principal = self.principal_of(fresh)
        self.audit.record(principal, user.get("homeTenant"), "login.succeeded", f"user:{user['email']}")
        return principal

    def verify_totp(self, user_id: str, code: str) -> Principal:
        user = self._get(user_id)
        self._check_usable(user)
        if not user.get("mfaEnrolled") or not user.get("mfaSecret"):
            raise Invalid("this account has no authenticator enrolled")
        secret = self.box.open(user["mfaSecret"])
        if not pyotp.TOTP(secret).verify((code or "").strip(), valid_window=1):
            self._note_failure(user, "bad TOTP code")
            raise Invalid("that code is not right; use the current 6-digit code from your authenticator app")
        return self._succeed(user)

    # MFA enrolment -----------------------------------------------------------------------
    def begin_enrolment(self, user_id: str) -> tuple[str, str]:
        """A new TOTP secret (kept pending until confirmed) and its otpauth:// URI for the QR code."""
        user = self._get(user_id)
        self._check_usable(user)
        secret = pyotp.random_base32()

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc["mfaPending"] = self.box.seal(secret)
            return doc

        self.store.update(self.CONTAINER, PLATFORM, user_id, change)
        return secret, pyotp.TOTP(secret).provisioning_uri(name=user["email"], issuer_name=ISSUER)

    def confirm_enrolment(self, user_id: str, code: str) -> Principal:
        user = self._get(user_id)
        self._check_usable(user)
        if not user.get("mfaPending"):
            raise Invalid("start enrolment first: scan the QR code, then enter the code it shows")
        secret = self.box.open(user["mfaPending"])
        if not pyotp.TOTP(secret).verify((code or "").strip(), valid_window=1):
            self._note_failure(user, "bad TOTP code at enrolment")
            raise Invalid("that code is not right; enter the current 6-digit code from your authenticator app")

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc.update(mfaSecret=doc.pop("mfaPending"), mfaEnrolled=True)
            return doc

        self.store.update(self.CONTAINER, PLATFORM, user_id, change)
        principal = self.principal_of(user)
        self.audit.record(principal, user.get("homeTenant"), "user.mfa_enrolled", f"user:{user['email']}")
        return self._succeed(user)

    # sessions ----------------------------------------------------------------------------
    def session_subject(self, principal: Principal) -> str:
        """What the session cookie carries: the user id and the session version it was issued at."""
        return f"{principal.user_id}:{self._get(principal.user_id).get('sessionVersion', 1)}"

    def principal_from_session(self, subject: str) -> Principal | None:
        """The principal for a cookie's subject, or None if revoked, deactivated or locked."""
        user_id, _, version = (subject or "").partition(":")
        user = self.store.get_or_none(self.CONTAINER, PLATFORM, user_id)
        if user is None or not user.get("active") or str(user.get("sessionVersion", 1)) != version:
            return None
        if user.get("lockedUntil") and user["lockedUntil"] > clock.iso():
            return None
        return self.principal_of(user)

    def sign_out(self, principal: Principal) -> None:
        """Revoke every session cookie of this user (the session version moves on) and audit it."""

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc["sessionVersion"] = int(doc.get("sessionVersion", 1)) + 1
            return doc

        self.store.update(self.CONTAINER, PLATFORM, principal.user_id, change)
        self.audit.record(principal, principal.tenant_id, "logout", f"user:{principal.email}")

    def current(self, user_id: str) -> Principal | None:
        user = self.store.get_or_none(self.CONTAINER, PLATFORM, user_id)
        if user is None or not user.get("active"):
            return None
        return self.principal_of(user)

    # administration ----------------------------------------------------------------------
    def _admin_change(self, principal: Principal, user_id: str, action: str, reason: str, mutate: Any) -> Doc:
        require(principal, None, {ADMIN})
        if not reason.strip():
            raise Invalid("a reason is required")
        try:
            before = self._get(user_id)
        except NotFound:
            raise NotFound("that user does not exist") from None

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            mutate(doc)
            doc["sessionVersion"] = int(doc.get("sessionVersion", 1)) + 1  # signs the user out everywhere
            return doc

        after = self.store.update(self.CONTAINER, PLATFORM, user_id, change)
        assert after is not None
        keys = ("role", "homeTenant", "active", "mfaEnrolled", "lockedUntil")
        self.audit.record(
            principal,
            before.get("homeTenant"),
            action,
            f"user:{before['email']}",
            reason,
            before={k: before.get(k) for k in keys},
            after={k: after.get(k) for k in keys},
        )
        return self.public(after)

    def set_role(self, principal: Principal, user_id: str, role: str, tenant_id: str | None, reason: str) -> Doc:
        require(principal, None, {ADMIN})
        if role not in ROLES:
            raise Invalid(f"unknown role {role!r}; choose one of: {', '.join(ROLE_LABELS)}")
        if role == ADMIN:
            tenant_id = None
        if user_id == principal.user_id and role != ADMIN:
            raise Invalid("you cannot remove your own admin role; ask another admin")
        if tenant_id is not None:
            self.tenants.get(principal, tenant_id)
        return self._admin_change(
            principal, user_id, "user.set_role", reason, lambda d: d.update(role=role, homeTenant=tenant_id)
        )

    def reset_mfa(self, principal: Principal, user_id: str, reason: str) -> Doc:
        return self._admin_change(
            principal,
            user_id,
            "user.reset_mfa",
            reason,
            lambda d: d.update(mfaEnrolled=False, mfaSecret=None, mfaPending=None),
        )

    def set_active(self, principal: Principal, user_id: str, active: bool, reason: str) -> Doc:
        require(principal, None, {ADMIN})
        if user_id == principal.user_id and not active:
            raise Invalid("you cannot deactivate yourself")
        return self._admin_change(
            principal,
            user_id,
            "user.activate" if active else "user.deactivate",
            reason,
            lambda d: d.update(active=active, lockedUntil=None, failedLogins=0),
        )

    def change_password(self, principal: Principal, current: str, new: str) -> None:
        user = self._get(principal.user_id)
        if not user.get("passwordHash") or not bcrypt.checkpw(current.encode(), user["passwordHash"].encode()):
            raise Invalid("your current password is not right")
        _check_password_strength(new)

        def change(doc: Doc | None) -> Doc | None:
            if doc is None:
                return None
            doc.update(passwordHash=bcrypt.hashpw(new.encode(), bcrypt.gensalt()).decode(), mustChangePassword=False)
            return doc

        self.store.update(self.CONTAINER, PLATFORM, principal.user_id, change)
        self.audit.record(principal, principal.tenant_id, "user.change_password", f"user:{principal.email}")

    # single sign-on ----------------------------------------------------------------------
    def principal_from_oidc(self, claims: dict[str, Any], role_map: dict[str, str]) -> Principal:
        """Map an Entra ID token's groups or app roles to a console role; first match in ROLES order wins.

        The user record is created on first sign-in (source ``entra``) so it can be audited and
        deactivated like any other; a deactivated SSO user is refused even with a valid token.
        """
        email = str(claims.get("email") or claims.get("preferred_username") or "").lower()
        if "@" not in email:
            raise Forbidden("your sign-in did not include an email address; ask an admin to check the SSO setup")
        names = [str(x) for x in (claims.get("roles") or [])] + [str(x) for x in (claims.get("groups") or [])]
        granted = {role_map[n] for n in names if n in role_map and role_map[n] in ROLES}
        role = next((r for r in ROLES if r in granted), None)
        if role is None:
            raise Forbidden(f"{email} has no console role: ask an admin to add you to a mapped Entra group or app role")
        tenant_id = claims.get("castiel_tenant") if role != ADMIN else None
        user = self.store.get_or_none(self.CONTAINER, PLATFORM, user_id_for(email))
        if user is None:
            from core.services.access import SYSTEM

            self.create(
                SYSTEM,
                email,
                role,
                tenant_id,
                name=str(claims.get("name") or ""),
                source="entra",
                reason="first single sign-on",
            )
            user = self._get(user_id_for(email))
        elif user.get("role") != role or user.get("homeTenant") != tenant_id:

            def change(doc: Doc | None) -> Doc | None:
                if doc is None:
                    return None
                doc.update(role=role, homeTenant=tenant_id)
                return doc

            user = self.store.update(self.CONTAINER, PLATFORM, user["id"], change) or user
        self._check_usable(user)
        return self._succeed(user)
