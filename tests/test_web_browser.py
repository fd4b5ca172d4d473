"""The UI in headless Chromium against a real `dsmpacs serve`: sign in, switch
language, markup in a patient name stays text, the layout on a phone."""
from __future__ import annotations

import pytest

from tests import factories as f
from tests.browser import sign_in
from tests.webclient import add_user


@pytest.fixture
def live(server_factory):
    return server_factory()


def test_login_switch_language_and_logout(live, page):
    password = add_user(live, "rad1", "radiologist")
    response = page.goto(live.url("/"))
    assert response.status == 401                              # anonymous: the login page, as 401
    assert page.locator("h1").text_content() == "Sign in"
    page.shot("login")

    sign_in(page, live, "rad1", password)
    assert page.locator("h1").text_content() == "Archive"
    assert page.locator("html").get_attribute("lang") == "en"
    # Plural forms in the browser: Intl.PluralRules picks the CLDR category, as Babel does on the server.
    frames = "[1, 2, 0].map(function (n) { return DSM.t('js.viewer.frames', {count: n}); })"
    assert page.evaluate(frames) == ["1 frame", "2 frames", "0 frames"]

    page.click("[data-lang-switch] button[value=zh-Hans]")
    page.wait_for_selector("html[lang=zh-Hans]")
    assert page.locator("h1").text_content() == "影像归档"
    assert page.locator("[data-action=logout]").text_content().strip() == "退出登录"
    assert page.evaluate(frames) == ["1 帧", "2 帧", "0 帧"]
    page.goto(live.url("/account"))                            # the choice sticks
    assert page.locator("h1").text_content() == "我的账户"
    page.shot("chinese")

    page.click("[data-action=logout]")
    page.wait_for_selector("[data-login-form]")
    assert page.locator("h1").text_content() == "登录"
    assert page.errors == []                                   # no script error, no CSP violation


def test_markup_in_a_patient_name_is_shown_and_never_run(live, page, tmp_path):
    xss = "<img src=x onerror=alert(1)>"
    path = f.write(f.secondary_capture(patient=f.Patient(name=xss, patient_id="XSS-1"),
                                       study_description="<script>alert(2)</script>"), tmp_path / "x.dcm")
    assert live.storescu(path).returncode == 0
    password = add_user(live, "boss", "admin")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    sign_in(page, live, "boss", password)
    for url in (live.url("/"), live.url("/admin/activity")):
        page.goto(url)
        cell = page.locator("[data-table=recent-studies] [data-col=patient-name]").first
        assert cell.text_content() == "<img src = x onerror = alert(1)>"
        assert cell.locator("img").count() == 0
        assert page.locator("[data-table=recent-studies] script").count() == 0
        assert page.get_by_text("<script>alert(2)</script>").count() == 1
    page.shot("xss-as-text")
    assert dialogs == []
    assert page.errors == []


def test_phone_layout_has_a_menu_button(live, browser, tmp_path):
    password = add_user(live, "boss", "admin")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone = context.new_page()
        phone.goto(live.url("/"))
        phone.fill("input[name=username]", "boss")
        phone.fill("input[name=password]", password)
        phone.click("[data-login-form] button[type=submit]")
        phone.wait_for_selector("h1")
        nav = phone.locator("#nav")
        assert not nav.is_visible()
        phone.click("[data-nav-toggle]")
        assert nav.is_visible()
        phone.click("#nav [data-nav=admin]")
        phone.wait_for_url("**/admin/storage")
        phone.wait_for_load_state("load")            # the stylesheet applied, not just the DOM there
        # the page fits the screen: nothing wider than the viewport but scrolling tables
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        (tmp_path / "screenshots").mkdir(exist_ok=True)
        phone.screenshot(path=str(tmp_path / "screenshots" / "phone-admin.png"), full_page=True)
    finally:
        context.close()


def test_the_study_lists_last_column_is_visible_at_1440_px(live, browser, tmp_path):
    """A study with four series, a long description and a long ID: at 1440x900 the View
    button lies inside the table's box (it sat past the scrolling edge), in both languages."""
    patient = f.Patient(name="ZHANG^XIAOLONG", patient_id="P-0001234567")
    study = "1.2.826.0.1.3680043.8.498.9901"
    for number in range(1, 5):
        run = f.xa_run(frames=2, size=64, patient=patient, study_uid=study, series_number=number,
                       accession="ACC-2024-000123",
                       study_description="Cerebral angiography, right ICA aneurysm, coil embolisation follow-up")
        assert live.storescu(f.write(run, tmp_path / f"{number}.dcm")).returncode == 0
    password = add_user(live, "rad3", "radiologist")
    for locale in ("en-US", "zh-CN"):
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale=locale)
        try:
            page = context.new_page()
            sign_in(page, live, "rad3", password)
            page.goto(live.url("/studies"))
            view = page.locator("[data-table=recent-studies] [data-action=view]").first.bounding_box()
            box = page.locator(".table-wrap").first.bounding_box()
            assert view["x"] + view["width"] <= box["x"] + box["width"], (locale, view, box)
            assert page.locator("[data-table=recent-studies] img.thumb").count() == 4
        finally:
            context.close()
