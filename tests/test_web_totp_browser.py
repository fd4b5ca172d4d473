"""TOTP enrolment and re-authentication in headless Chromium against a real
`dsmpacs serve`: the QR page, the recovery codes, and a form that goes through
"confirm it is you" and is re-sent by the browser itself."""
from __future__ import annotations

import pytest

from tests.peers import wait_until
from tests.test_web_totp import code_at, wait_reauth_expired
from tests.webclient import add_user, server_archive


@pytest.mark.slow
def test_an_admin_enrols_with_the_qr_page_then_confirms_a_user_change(server_factory, page):
    server = server_factory(require_totp_roles="admin", web_reauth_minutes=0.02, only="web")
    password = add_user(server, "chief", "admin")
    page.goto(server.url("/admin/users"))
    page.fill("input[name=username]", "chief")
    page.fill("input[name=password]", password)
    page.click("[data-login-form] button[type=submit]")

    page.wait_for_selector("[data-totp-qr] img")
    assert page.locator("[data-totp-required]").is_visible()
    loaded = page.wait_for_function(
        "() => { const i = document.querySelector('[data-totp-qr] img'); return i.complete && i.naturalWidth }")
    assert loaded.json_value() > 100                                    # the SVG drew, big enough
    page.shot("enrol")
    secret = page.locator("[data-totp-secret]").text_content()
    page.fill("[data-totp-enrol] input[name=code]", code_at(secret))
    page.click("[data-totp-enrol] button[type=submit]")
    page.wait_for_selector("[data-recovery-codes]")
    assert page.locator("[data-recovery-codes] li").count() == 10
    page.shot("recovery-codes")
    page.click("[data-continue]")
    page.wait_for_selector("[data-table=users]")                        # where the sign-in was going

    wait_reauth_expired(server, "chief")
    page.fill("form[action='/admin/users'] input[name=username]", "newrad")
    page.click("form[action='/admin/users'] button[type=submit]")
    page.wait_for_selector("[data-reauth]")
    page.shot("reauth")
    page.fill("[data-reauth] input[name=reauth_code]", code_at(secret, 1))
    page.click("[data-reauth] button[type=submit]")
    page.wait_for_selector("[data-user=newrad]")                         # the form was re-sent
    with server_archive(server) as archive:
        from dsmpacs.archive.users import Users

        wait_until(lambda: Users(archive.index).by_name("newrad") is not None, timeout=5, what="the user")
    assert page.errors == []
