"""A share link end to end in headless Chromium against a real `dsmpacs serve`:
a radiologist makes a link with an access code on the study page, a guest without
an account opens it in another browser, types the code and reads the study in the
real viewer (frames rendered, no script or CSP error), cannot reach the study
list, and loses the study the moment the radiologist revokes the link."""
from __future__ import annotations

from tests import factories as f
from tests.browser import sign_in
from tests.webclient import add_user

STUDY = "1.2.826.0.1.3680043.8.498.9701"
OTHER = "1.2.826.0.1.3680043.8.498.9702"


def test_share_link_with_code_opens_the_viewer_for_a_guest_until_revoked(server_factory, page, tmp_path):
    live = server_factory()
    run = f.xa_run(frames=6, size=64, patient=f.Patient("LIU^YANG", "SH-1"), study_uid=STUDY,
                   study_description="Carotid angiography")
    other = f.secondary_capture(patient=f.Patient("ZHAO^LEI", "SH-2"), study_uid=OTHER)
    paths = [f.write(ds, tmp_path / "in" / f"{i}.dcm") for i, ds in enumerate((run, other))]
    assert live.storescu(*paths).returncode == 0
    sign_in(page, live, "rad1", add_user(live, "rad1", "radiologist"))

    page.goto(live.url(f"/studies/{STUDY}"))
    page.fill("[data-form=share] input[name=days]", "2")
    page.fill("[data-form=share] input[name=code]", "open-4711")
    page.fill("[data-form=share] input[name=label]", "Dr Outside")
    page.shot("share-form")
    page.click("[data-action=share]")
    link = page.locator("[data-share-link]").input_value()
    assert "/s/" in link and len(link.rsplit("/", 1)[1]) >= 43          # 256 bits, URL-safe base64

    guest_context = page.context.browser.new_context(viewport={"width": 390, "height": 844})
    guest = guest_context.new_page()
    guest.set_default_timeout(15000)
    errors: list[str] = []
    guest.on("pageerror", lambda exc: errors.append(str(exc)))
    guest.on("console", lambda m: errors.append(m.text) if m.type == "error"
             and not m.text.startswith("Failed to load resource") else None)
    try:
        guest.goto(link)
        guest.fill("input[name=code]", "not-the-code")
        guest.click("[data-action=open-share]")
        guest.wait_for_selector("[data-error]")
        guest.fill("input[name=code]", "open-4711")
        guest.click("[data-action=open-share]")
        guest.wait_for_function(
            """() => { const img = document.querySelector('[data-viewport] [data-image]');
                 return img && (img.getAttribute('data-src') || '').includes('/render/')
                        && img.complete && img.naturalWidth > 0; }""")
        assert STUDY in guest.url and "/s/" not in guest.url          # the token left the address bar
        assert guest.locator("[data-nav=shared]").count() == 1
        assert guest.locator("[data-nav=studies], [data-action=logout]").count() == 0
        assert "LIU" in guest.locator("[data-col=patient-name]").first.text_content()
        assert errors == []
        guest.screenshot(path=str(tmp_path / "guest-viewer.png"))

        listing = guest.goto(live.url("/studies"))
        assert listing.status == 401
        assert guest.goto(live.url(f"/viewer?study={OTHER}")).status == 404

        # The radiologist sees the use and revokes the link; the guest's next request is refused.
        page.goto(live.url(f"/studies/{STUDY}"))
        assert page.locator("[data-share] [data-col=uses]").text_content() == "1"
        assert page.locator("[data-share] [data-has-code]").count() == 1
        page.shot("share-list")
        page.click("[data-action=revoke-share]")
        page.wait_for_selector("[data-share][data-state=revoked]")
        assert guest.goto(live.url(f"/viewer?study={STUDY}")).status == 401
        gone = guest.goto(link)
        assert gone.status == 410 and guest.locator("[data-share-gone=revoked]").count() == 1
    finally:
        guest_context.close()
    assert page.errors == []
