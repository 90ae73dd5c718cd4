"""Session-state keys, in one place so pages and tests agree on them."""

PRINCIPAL = "castiel.principal"
PENDING_LOGIN = "castiel.pending_login"  # user id waiting for a TOTP code or enrolment
ENROL_URI = "castiel.enrol_uri"
TENANT = "castiel.tenant"  # selected tenant id, or ALL_TENANTS
ALL_TENANTS = "__all__"
SET_COOKIE = "castiel.set_cookie"
FLASH = "castiel.flash"
