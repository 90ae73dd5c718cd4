"""Sign-in screens: password, TOTP, MFA enrolment by QR code, single sign-on, and the session cookie.

The session cookie is streamlit-authenticator's signed JWT, written from the browser (so it
cannot be httpOnly): it expires after ``CASTIEL_SESSION_HOURS`` and carries only the user id
and session version, which core checks on every use (sign-out and admin changes revoke it).
"""

from __future__ import annotations

import io
from datetime import datetime

import qrcode
import streamlit as st
from streamlit_authenticator.models.cookie_model import CookieModel

from app import state
from app.components.errors import show_error
from core.bootstrap import Services
from core.errors import CastielError
from core.services.access import Principal

COOKIE_NAME = "castiel_session"
COOKIE_WRITE_KEY = "castiel_cookie_write"  # the write component's key: its value turns True once written


def _cookie(services: Services) -> CookieModel:
    st.session_state.setdefault("logout", False)
    return CookieModel(
        cookie_name=COOKIE_NAME,
        cookie_key=services.settings.derived_key("session-cookie").hex(),
        cookie_expiry_days=services.settings.session_hours / 24,
    )


def resume_from_cookie(services: Services) -> Principal | None:
    """The principal of a valid, unrevoked session cookie; None for none, expired or tampered."""
    if COOKIE_NAME not in st.context.cookies:
        return None
    token = _cookie(services).get_cookie()
    if not token:
        return None
    return services.users.principal_from_session(str(token.get("username", "")))


def write_cookie_if_due(services: Services) -> None:
    """Called after the page renders, so the browser component that writes the cookie gets drawn.

    The write is drawn again on every run until the component reports it done: the cookie manager's
    own read component, drawn in the same run, can answer first and rerun the script, and a write
    drawn only once was then dropped before its frame had loaded (the browser stayed signed out on
    its next page load). The token is minted once, so each redraw is the same element.
    """
    principal = st.session_state.get(state.PRINCIPAL)
    pending = st.session_state.get(state.SET_COOKIE)
    if principal is None or not pending:
        return
    if st.session_state.get(COOKIE_WRITE_KEY) is True:
        st.session_state.pop(state.SET_COOKIE, None)
        return
    cookie = _cookie(services)
    if not isinstance(pending, dict):
        st.session_state["username"] = services.users.session_subject(principal)
        cookie.exp_date = datetime.now().timestamp() + services.settings.session_hours * 3600
        pending = {"token": cookie._token_encode(), "expires": datetime.fromtimestamp(cookie.exp_date)}
        st.session_state[state.SET_COOKIE] = pending
    cookie.cookie_manager.set(COOKIE_NAME, pending["token"], key=COOKIE_WRITE_KEY, expires_at=pending["expires"])


def _finish(principal: Principal) -> None:
    st.session_state[state.PRINCIPAL] = principal
    st.session_state[state.SET_COOKIE] = True
    st.session_state["logout"] = False
    st.session_state.pop(state.PENDING_LOGIN, None)
    st.session_state.pop(state.ENROL_URI, None)
    st.rerun()


def sign_out(services: Services) -> None:
    principal = st.session_state.get(state.PRINCIPAL)
    if principal is not None:
        services.users.sign_out(principal)
    for key in (state.PRINCIPAL, state.PENDING_LOGIN, state.ENROL_URI, state.TENANT):
        st.session_state.pop(key, None)
    st.session_state["logout"] = True
    if getattr(st.user, "is_logged_in", False):
        st.logout()
    st.rerun()


def qr_png(uri: str) -> bytes:
    buf = io.BytesIO()
    qrcode.make(uri).save(buf)
    return buf.getvalue()


def login_screen(services: Services) -> None:
    st.title("Castiel Admin Console")
    if services.settings.using_default_key:
        st.caption("Embedded demo mode (SQLite, local files, built-in secret key). Not for real data.")
    pending = st.session_state.get(state.PENDING_LOGIN)
    if pending is None:
        _password_form(services)
        if services.settings.oidc_enabled:
            st.divider()
            if st.button("Sign in with Microsoft", key="login_sso", icon=":material/login:"):
                st.login()
        return
    user_id, step = pending
    if step == "totp":
        _totp_form(services, user_id)
    else:
        _enrol_form(services, user_id)
    if st.button("Back to sign in", key="login_back"):
        st.session_state.pop(state.PENDING_LOGIN, None)
        st.rerun()


def _password_form(services: Services) -> None:
    with st.form("login_form"):
        st.subheader("Sign in")
        email = st.text_input("Email", key="login_email")
        password = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    try:
        step = services.users.authenticate(email, password)
    except CastielError as e:
        show_error(e)
        return
    if step.next == "done" and step.principal is not None:
        _finish(step.principal)
    st.session_state[state.PENDING_LOGIN] = (step.user_id, step.next)
    st.rerun()


def _totp_form(services: Services, user_id: str) -> None:
    with st.form("totp_form"):
        st.subheader("Two-step verification")
        code = st.text_input("6-digit code from your authenticator app", key="login_totp", max_chars=6)
        submitted = st.form_submit_button("Verify", type="primary")
    if submitted:
        try:
            _finish(services.users.verify_totp(user_id, code))
        except CastielError as e:
            show_error(e)


def _enrol_form(services: Services, user_id: str) -> None:
    st.subheader("Set up two-step verification")
    st.write("Your tenant requires an authenticator app. Scan this code, then enter the code the app shows.")
    if state.ENROL_URI not in st.session_state:
        try:
            secret, uri = services.users.begin_enrolment(user_id)
        except CastielError as e:
            show_error(e)
            return
        st.session_state[state.ENROL_URI] = (secret, uri)
    secret, uri = st.session_state[state.ENROL_URI]
    st.image(qr_png(uri), width=220, caption="Scan with your authenticator app")
    st.caption(f"Can't scan? Enter this key by hand: `{secret}`")
    with st.form("enrol_form"):
        code = st.text_input("6-digit code", key="enrol_code", max_chars=6)
        submitted = st.form_submit_button("Confirm", type="primary")
    if submitted:
        try:
            _finish(services.users.confirm_enrolment(user_id, code))
        except CastielError as e:
            show_error(e)


def sso_principal(services: Services) -> Principal | None:
    """The principal for a user signed in through Entra ID (st.login), mapped from groups or app roles."""
    if not services.settings.oidc_enabled or not getattr(st.user, "is_logged_in", False):
        return None
    claims = {k: st.user.get(k) for k in ("email", "preferred_username", "name", "roles", "groups", "castiel_tenant")}
    principal = services.users.principal_from_oidc(claims, services.settings.oidc_role_map)
    return principal
