"""Korean and Chinese: complete catalogues, kept current, and the language each visitor gets.

The catalogues (``locale/ko``, ``locale/zh_Hans``; ``django`` for Python and templates,
``djangojs`` for scripts) must translate every marked string, with the same placeholders and
markup as the English, and must hold exactly the strings the sources mark today
(``scripts/messages`` run on a copy of the sources finds nothing new). The language follows the
member's choice, else the language cookie, else the browser's ``Accept-Language``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import polib
import pytest
from django.core import mail
from django.test import Client
from django.utils import translation

from conversations import alerts, limits, usage
from conversations.models import Preference
from tests.helpers import page

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ["ko", "zh_Hans"]
DOMAINS = ["django", "djangojs"]
CATALOGUES = [(language, domain) for language in LANGUAGES for domain in DOMAINS]
PLACEHOLDER = re.compile(r"%\(\w+\)[sdif]|%[sdif]|%%|\{\w*\}")
TAG = re.compile(r"</?[a-zA-Z][^>]*>")


def catalogue(language: str, domain: str) -> polib.POFile:
    return polib.pofile(str(ROOT / "locale" / language / "LC_MESSAGES" / f"{domain}.po"))


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


# -- The catalogues ---------------------------------------------------------------------------


@pytest.mark.parametrize(("language", "domain"), CATALOGUES)
def test_every_marked_string_has_a_translation(language, domain):
    po = catalogue(language, domain)
    untranslated = [entry.msgid for entry in po.untranslated_entries()]
    fuzzy = [entry.msgid for entry in po.fuzzy_entries()]
    obsolete = [entry.msgid for entry in po.obsolete_entries()]

    assert not untranslated, f"{language}/{domain}: untranslated: {untranslated}"
    assert not fuzzy, f"{language}/{domain}: marked fuzzy: {fuzzy}"
    assert not obsolete, f"{language}/{domain}: obsolete: {obsolete}"
    assert not po.metadata_is_fuzzy and po.metadata["Plural-Forms"] == (
        "nplurals=1; plural=0;")


@pytest.mark.parametrize(("language", "domain"), CATALOGUES)
def test_translations_keep_the_placeholders_and_markup_of_the_english(language, domain):
    wrong = []
    for entry in catalogue(language, domain).translated_entries():
        if entry.msgid_plural:
            # One form for every count: it carries what the English plural carries.
            english, translated = entry.msgid_plural, entry.msgstr_plural[0]
        else:
            english, translated = entry.msgid, entry.msgstr
        same_placeholders = set(placeholders(translated)) == set(placeholders(english)) or (
            entry.msgid_plural and set(placeholders(translated)) <= (
                set(placeholders(entry.msgid)) | set(placeholders(entry.msgid_plural))))
        if not same_placeholders or sorted(TAG.findall(english)) != sorted(
                TAG.findall(translated)):
            wrong.append((entry.msgid, translated))
    assert not wrong, f"{language}/{domain}: {wrong}"


def test_the_catalogues_hold_exactly_the_strings_the_sources_mark(tmp_path):
    """Run scripts/messages on a copy of the sources: a string marked since the catalogues were
    last brought up to date (or one no longer marked) shows as a difference."""
    copy = tmp_path / "chatsite"
    copy.mkdir()
    for name in ("chatsite", "conversations", "templates", "static", "locale", "scripts"):
        shutil.copytree(ROOT / name, copy / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.mo"))
    shutil.copy(ROOT / "manage.py", copy / "manage.py")
    (copy / ".venv").symlink_to(ROOT / ".venv")

    subprocess.run([str(copy / "scripts" / "messages")], cwd=copy, check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin",
                                             "CHATSITE_DATA_DIR": str(tmp_path / "data")})

    for language, domain in CATALOGUES:
        now = {entry.msgid for entry in polib.pofile(
            str(copy / "locale" / language / "LC_MESSAGES" / f"{domain}.po"))}
        kept = {entry.msgid for entry in catalogue(language, domain)}
        assert now - kept == set(), f"{language}/{domain}: new strings: run scripts/messages"
        assert kept - now == set(), f"{language}/{domain}: strings no longer used"


@pytest.mark.parametrize(("language", "expected"), [("ko", "새 대화"), ("zh-hans", "新对话")])
def test_the_compiled_catalogues_are_loaded(language, expected):
    with translation.override(language):
        assert translation.gettext("New chat") == expected


# -- Which language a visitor gets ------------------------------------------------------------




def language_of(response) -> str:
    return page(response).find("html").attrs["lang"]


@pytest.mark.django_db
@pytest.mark.parametrize(("header", "lang", "words"), [
    ("ko-KR,ko;q=0.9,en;q=0.5", "ko", "새 대화"),
    ("zh-CN,zh;q=0.9", "zh-hans", "新对话"),
    ("en-US,en;q=0.9", "en", "New chat"),
])
def test_the_page_speaks_the_language_the_browser_asks_for(alice, header, lang, words):
    response = alice.get("/", HTTP_ACCEPT_LANGUAGE=header)

    assert language_of(response) == lang
    assert words in response.content.decode()
    assert response["Content-Language"] == lang


@pytest.mark.django_db
def test_a_members_chosen_language_wins_over_the_browser_and_follows_them_to_a_new_login(
    alice, user
):
    response = alice.post("/settings/language", {"language": "zh-hans", "next": "/usage/"})

    assert response.status_code == 302 and response["Location"] == "/usage/"
    assert Preference.objects.get(user=user).language == "zh-hans"
    assert language_of(alice.get("/", HTTP_ACCEPT_LANGUAGE="ko")) == "zh-hans"
    elsewhere = Client()  # another device: no cookie, a Korean browser
    elsewhere.force_login(user)
    assert language_of(elsewhere.get("/", HTTP_ACCEPT_LANGUAGE="ko")) == "zh-hans"


@pytest.mark.django_db
def test_choosing_the_browsers_language_again_follows_the_browser(alice, user):
    alice.post("/settings/language", {"language": "ko"})
    response = alice.post("/settings/language", {"language": ""})

    assert Preference.objects.get(user=user).language == ""
    assert response.cookies["django_language"].value == ""  # the cookie is deleted
    assert language_of(alice.get("/", HTTP_ACCEPT_LANGUAGE="zh-CN")) == "zh-hans"


@pytest.mark.django_db
def test_the_chooser_shows_the_members_choice(alice):
    alice.post("/settings/language", {"language": "ko"})

    chooser = page(alice.get("/")).find("select", name="language")
    chosen = [option.attrs["value"] for option in chooser.find_all("option")
              if "selected" in option.attrs]
    assert chosen == ["ko"]


@pytest.mark.django_db
def test_a_language_not_offered_changes_nothing(alice, user):
    response = alice.post("/settings/language", {"language": "de", "next": "/"})

    assert response.status_code == 302
    assert not Preference.objects.filter(user=user).exclude(language="").exists()
    assert language_of(alice.get("/", HTTP_ACCEPT_LANGUAGE="ko")) == "ko"


@pytest.mark.django_db
def test_the_login_page_offers_the_language_and_remembers_a_visitors_choice(client, user):
    login = page(client.get("/accounts/login/"))
    assert login.find("select", name="language") is not None

    response = client.post("/settings/language",
                           {"language": "ko", "next": "/accounts/login/"})

    assert response["Location"] == "/accounts/login/"
    again = client.get("/accounts/login/")
    assert language_of(again) == "ko"
    assert "로그인" in again.content.decode()


@pytest.mark.django_db
def test_a_redirect_after_choosing_never_leaves_the_site(alice):
    response = alice.post("/settings/language",
                          {"language": "ko", "next": "https://evil.example/"})

    assert response["Location"] == "/"


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "amount"), [
    ("en", "$1,234.50"), ("ko", "US$1,234.50"), ("zh-hans", "US$1,234.50"),
])
def test_amounts_of_money_are_written_as_the_language_writes_them(language, amount):
    with translation.override(language):
        assert usage.money("1234.5") == amount
        assert usage.money("0.0042").endswith("0.0042")


@pytest.mark.django_db
def test_the_script_strings_come_translated_in_the_pages_language(alice):
    script = alice.get("/jsi18n/?l=ko", HTTP_ACCEPT_LANGUAGE="ko").content.decode()

    assert "\\ubcf5\\uc0ac" in script or "복사" in script  # "Copy": 복사


@pytest.mark.django_db
def test_a_budget_alert_mail_is_written_in_each_recipients_language(
    django_user_model, settings
):
    settings.LANGUAGE_CODE = "en"
    korean = django_user_model.objects.create_superuser("kim", "kim@example.com", "x")
    Preference.objects.create(user=korean, language="ko")
    django_user_model.objects.create_superuser("ann", "ann@example.com", "x")
    member = django_user_model.objects.create_user("lee")
    budget = limits.Budget(kind="tokens", limit=1000, used=900, team=None)

    alerts._fire(budget, member)

    by_address = {message.to[0]: message.subject for message in mail.outbox}
    assert by_address["ann@example.com"].startswith("Budget alert")
    assert by_address["kim@example.com"].startswith("예산 알림")


@pytest.mark.django_db
@pytest.mark.parametrize(("header", "heading"), [("ko", "페이지를 찾을 수 없음"),
                                                 ("zh-CN", "找不到页面")])
def test_an_error_page_speaks_the_browsers_language(alice, header, heading):
    response = alice.get("/c/999999/", HTTP_ACCEPT_LANGUAGE=header)

    assert response.status_code == 404
    assert heading in page(response).find("h1").text
