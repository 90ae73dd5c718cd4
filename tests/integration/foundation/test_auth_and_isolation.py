"""Sign-in, lockout, TOTP, sessions, roles and tenant isolation, against a real SQLite store."""

from __future__ import annotations

import jwt
import pyotp
import pytest

from core import clock
from core.errors import Forbidden, Invalid, NotFound
from core.services.access import ADMIN, SYSTEM
from tests.conftest import PASSWORD, make_user


def test_wrong_password_and_unknown_user_get_the_same_message(services, principals):
    with pytest.raises(Invalid) as wrong:
        services.users.authenticate(principals["ops"].email, "nope-nope-nope")
    with pytest.raises(Invalid) as unknown:
        services.users.authenticate("nobody@example.com", "nope-nope-nope")
    assert wrong.value.message == unknown.value.message == "wrong email or password"


def test_five_failures_lock_for_fifteen_minutes(services, principals):
    email = principals["support"].email
    for _ in range(5):
        with pytest.raises(Invalid):
            services.users.authenticate(email, "bad-password-x")
    with pytest.raises(Forbidden) as locked:
        services.users.authenticate(email, PASSWORD)  # right password, still locked
    assert "locked" in locked.value.message
    user = services.store.get("users", "_platform", principals["support"].user_id)
    minutes = (clock.parse(user["lockedUntil"]) - clock.now()).total_seconds() / 60
    assert 14 < minutes <= 15
    assert services.audit.search(SYSTEM, action="user.locked").rows


def test_mfa_policy_requires_enrolment_then_totp(services, principals, two_tenants):
    services.tenants.update_settings(SYSTEM, two_tenants[0], {"mfa_required": True}, reason="policy")
    step = services.users.authenticate(principals["ml_engineer"].email, PASSWORD)
    assert step.next == "enrol" and step.principal is None
    secret, uri = services.users.begin_enrolment(step.user_id)
    assert uri.startswith("otpauth://totp/")
    with pytest.raises(Invalid):
        services.users.confirm_enrolment(step.user_id, "000000")
    p = services.users.confirm_enrolment(step.user_id, pyotp.TOTP(secret).now())
    assert p.role == "ml_engineer"
    step2 = services.users.authenticate(principals["ml_engineer"].email, PASSWORD)
    assert step2.next == "totp"
    with pytest.raises(Invalid) as bad:
        services.users.verify_totp(step2.user_id, "123456" if pyotp.TOTP(secret).now() != "123456" else "654321")
    assert "code" in bad.value.message
    assert services.users.verify_totp(step2.user_id, pyotp.TOTP(secret).now()).user_id == step2.user_id
    stored = services.store.get("users", "_platform", step2.user_id)
    assert secret not in str(stored), "the TOTP secret must be stored encrypted"


def test_session_subject_revoked_by_sign_out_and_deactivation(services, principals):
    admin, ops = principals["admin"], principals["ops"]
    subject = services.users.session_subject(ops)
    assert services.users.principal_from_session(subject) == ops
    services.users.sign_out(ops)
    assert services.users.principal_from_session(subject) is None
    subject = services.users.session_subject(ops)
    services.users.set_active(admin, ops.user_id, False, "left the company")
    assert services.users.principal_from_session(subject) is None
    assert services.users.current(ops.user_id) is None
    with pytest.raises(Forbidden):
        services.users.authenticate(ops.email, PASSWORD)


def test_tampered_and_expired_cookie_tokens_are_refused(services, principals):
    """The cookie is streamlit-authenticator's HS256 JWT; a wrong key or an old expiry gives no session."""
    from streamlit_authenticator.models.cookie_model import CookieModel

    key = services.settings.derived_key("session-cookie").hex()
    model = CookieModel.__new__(CookieModel)
    model.cookie_key = key
    model.token = jwt.encode(
        {"username": "x", "exp_date": 1}, "another-key-of-thirty-two-bytes-long!", algorithm="HS256"
    )
    assert model._token_decode() is False
    model.token = jwt.encode({"username": services.users.session_subject(principals["ops"]), "exp_date": 1}, key)
    decoded = model._token_decode()
    assert decoded and decoded["exp_date"] < clock.now().timestamp()  # get_cookie() refuses expired ones


def test_only_admins_manage_users(services, principals):
    for role in ("ops", "support", "ml_engineer", "content_admin"):
        with pytest.raises(Forbidden):
            services.users.create(principals[role], "x@example.com", "ops", "tenant-a", password=PASSWORD)
        with pytest.raises(Forbidden):
            services.users.set_role(principals[role], principals["ops"].user_id, "support", "tenant-a", "r")
    changed = services.users.set_role(principals["admin"], principals["ops"].user_id, "support", "tenant-a", "moved")
    assert changed["role"] == "support"
    row = services.audit.search(principals["admin"], action="user.set_role").rows[0]
    assert row["actor"] == principals["admin"].email and row["reason"] == "moved"
    assert row["before"]["role"] == "ops" and row["after"]["role"] == "support"


def test_tenant_isolation_across_services(services, two_tenants):
    a, b = two_tenants
    user_a = make_user(services, "ops", a)
    make_user(services, "ops", b)
    services.tenants.update_settings(SYSTEM, b, {"generation_quota_monthly": 5}, reason="b only")
    job_b = services.queue.enqueue(SYSTEM, "q", "system.probe", b, {})
    with pytest.raises(Forbidden):
        services.tenants.get(user_a, b)
    with pytest.raises(Forbidden):
        services.tenants.update_settings(user_a, b, {"mfa_required": True}, reason="x")
    with pytest.raises(Forbidden):
        services.queue.get(user_a, b, job_b["id"])
    with pytest.raises(Forbidden):
        services.queue.cancel(user_a, b, job_b["id"], "x")
    with pytest.raises(Forbidden):
        services.audit.search(user_a, tenant_id=b)
    with pytest.raises(Forbidden):
        services.queue.enqueue(user_a, "q", "system.probe", b, {})
    assert [t["id"] for t in services.tenants.list(user_a)] == [a]
    assert all(r["tenantId"] != b for r in services.audit.search(user_a).rows)
    assert all(r["tenantId"] != b for r in services.queue.recent(user_a))
    with pytest.raises(NotFound):
        services.queue.get(user_a, a, job_b["id"])  # b's id looked up in a's partition


def test_admin_cannot_be_tenant_scoped_and_roles_are_checked(services, two_tenants):
    with pytest.raises(Invalid):
        services.users.create(SYSTEM, "adm@example.com", ADMIN, two_tenants[0], password=PASSWORD)
    with pytest.raises(Invalid):
        services.users.create(SYSTEM, "x@example.com", "wizard", two_tenants[0], password=PASSWORD)
    with pytest.raises(NotFound):
        services.users.create(SYSTEM, "y@example.com", "ops", "no-such-tenant", password=PASSWORD)


def test_oidc_claims_map_to_roles(services, two_tenants):
    role_map = {"castiel-ops": "ops", "castiel-admins": "admin"}
    p = services.users.principal_from_oidc(
        {"email": "Jane@Contoso.com", "groups": ["castiel-ops"], "castiel_tenant": two_tenants[0]}, role_map
    )
    assert (p.email, p.role, p.tenant_id) == ("jane@contoso.com", "ops", two_tenants[0])
    with pytest.raises(Forbidden):
        services.users.principal_from_oidc({"email": "bob@contoso.com", "groups": ["other"]}, role_map)
    services.users.set_active(SYSTEM, p.user_id, False, "offboarded")
    with pytest.raises(Forbidden):
        services.users.principal_from_oidc(
            {"email": "jane@contoso.com", "groups": ["castiel-ops"], "castiel_tenant": two_tenants[0]}, role_map
        )
