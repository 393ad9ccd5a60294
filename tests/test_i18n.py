"""Interface language: English by default, Simplified Chinese by Accept-Language or the switcher, and
a Chinese catalogue that is complete and compiled."""

from __future__ import annotations

import io
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from tests.conftest import audit_rows, csrf_token, login, make_token, make_user, png_bytes, submit
from webapp.extensions import db
from webapp.i18n import job_error, match_accept_language, model_unavailable_message
from webapp.inference import ModelService, ModelState, ModelUnavailable
from webapp.models import Analysis

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ROOT / "webapp" / "translations" / "zh" / "LC_MESSAGES"
ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}


def html_lang(body: str) -> str:
    return re.search(r'<html lang="([^"]+)">', body).group(1)


def title(body: str) -> str:
    return re.search(r"<title>(.*?)</title>", body, re.S).group(1)


@pytest.fixture
def zh_client(app):
    """An anonymous client whose browser prefers Simplified Chinese."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH["Accept-Language"]
    return client


@pytest.fixture
def zh_alice(app, zh_client):
    """A signed-in user whose browser prefers Simplified Chinese."""
    make_user(app, "alice")
    assert login(zh_client, "alice").status_code == 302
    return zh_client


@pytest.fixture
def zh_clinician(app):
    """A signed-in clinician (medical is hers) whose browser prefers Simplified Chinese."""
    make_user(app, "alice", role="clinician")
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = ZH["Accept-Language"]
    assert login(client, "alice").status_code == 302
    return client


def only_analysis(app) -> Analysis:
    """The one analysis in the database, detached."""
    with app.app_context():
        [row] = db.session.scalars(db.select(Analysis)).all()
        db.session.expunge(row)
        return row


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9", "zh"),
        ("zh-Hans", "zh"),
        ("zh-SG", "zh"),
        ("zh", "zh"),
        ("zh_CN", "zh"),
        ("zh-Hans-CN", "zh"),
        ("fr-FR, zh;q=0.5, en;q=0.4", "zh"),
        ("en-GB", "en"),
        ("de-DE, en;q=0.8, zh;q=0.5", "en"),
        ("zh-TW", None),  # Traditional Chinese is not this catalogue
        ("zh-Hant-HK", None),
        ("zh-TW, zh;q=0.8", "zh"),
        ("fr, de", None),
        ("zh;q=0, en;q=0.5", "en"),
        ("*", None),
        ("", None),
    ],
)
def test_accept_language_matching(header, expected):
    """Simplified Chinese tags map to zh, English tags to en, in the client's order of preference."""
    assert match_accept_language(parse_accept_header(header, LanguageAccept)) == expected


def test_english_without_accept_language(client):
    """No Accept-Language (like the test client and most programs) gives English pages."""
    body = client.get("/login").get_data(as_text=True)
    assert html_lang(body) == "en"
    assert title(body) == "Sign in · Prism"
    assert "<h1>Sign in</h1>" in body


@pytest.mark.parametrize("header", ["fr-FR,fr;q=0.9", "zh-TW", "en-US,en;q=0.9"])
def test_other_languages_get_english(client, header):
    """Unsupported languages, Traditional Chinese included, fall back to English."""
    body = client.get("/login", headers={"Accept-Language": header}).get_data(as_text=True)
    assert html_lang(body) == "en"
    assert "<h1>Sign in</h1>" in body


def test_login_page_in_chinese(zh_client):
    """Accept-Language zh-CN gives the login page in Chinese, with <html lang="zh-Hans">."""
    body = zh_client.get("/login").get_data(as_text=True)
    assert html_lang(body) == "zh-Hans"
    assert title(body) == "登录 · Prism"
    assert "<h1>登录</h1>" in body
    assert '<label for="username">用户名</label>' in body
    assert "在此设备上保持登录" in body
    assert "New here?" not in body and "还没有账号？" in body


def test_failed_login_flash_in_chinese(app, zh_client):
    """The flash after a failed login is in Chinese."""
    make_user(app, "alice")
    response = zh_client.post(
        "/login", data={"username": "alice", "password": "wrong", "csrf_token": csrf_token(zh_client, "/login")}
    )
    assert "用户名或密码错误。" in response.get_data(as_text=True)


def test_login_required_flash_in_chinese(zh_client):
    """Flask-Login's 'please log in' flash is translated too."""
    response = zh_client.get("/history/", follow_redirects=True)
    assert "请登录后访问此页面。" in response.get_data(as_text=True)


def test_register_flash_and_validation_errors_in_chinese(zh_client):
    """Form validation errors (ours and WTForms' built-in ones) and the welcome flash are in Chinese."""
    token = csrf_token(zh_client, "/register")
    bad = zh_client.post(
        "/register", data={"username": "ab", "password": "short", "confirm": "other", "csrf_token": token}
    ).get_data(as_text=True)
    assert "字段长度必须介于 3 到 64 个字符之间。" in bad  # WTForms' own catalogue (the username)
    assert "至少使用 8 个字符。" in bad  # ours (the password policy)
    assert "两次输入的密码不一致。" in bad
    assert "Passwords differ." not in bad
    good = zh_client.post(
        "/register",
        data={"username": "new", "password": "a long passphrase", "confirm": "a long passphrase", "csrf_token": token},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "欢迎使用 Prism！" in good


def test_scenario_pages_in_chinese(zh_clinician):
    """Scenario titles, labels, help texts and placeholders come from the Chinese catalogue."""
    body = zh_clinician.get("/medical/").get_data(as_text=True)
    assert title(body) == "医学影像 · Prism"
    assert "<h1>医学影像</h1>" in body
    assert "临床备注或问题（可选）" in body
    assert 'placeholder="例如：复查影像，患者自述疼痛较上次就诊减轻。"' in body
    assert "支持 DICOM、PNG、JPEG、WebP、GIF、BMP 或 TIFF，每个不超过 10 MB。" in body
    assert "图片将生成图像描述供您审核；备注会随记录一起保存。" in body
    assert 'data-still-waiting="仍在等待……您可以重新提交。"' in body


def test_analysis_flash_and_record_in_chinese(zh_alice):
    """After an analysis the flash, the record page, the prediction card and the sentiment names are in Chinese."""
    response = submit(zh_alice, text="太好了，谢谢！")
    assert response.status_code == 302
    body = zh_alice.get(response.headers["Location"]).get_data(as_text=True)
    assert "已保存到您的历史记录，模型正在处理。" in body
    assert "<h3>情感 " in body and "AI 建议" in body
    assert "正面" in body and "置信度" in body
    assert "您的决定" in body and ">接受</button>" in body
    assert "Saved to your history" not in body


def test_batch_page_in_chinese(app, zh_client):
    """A teacher's batch: the flash, the summary line and the status names are in Chinese."""
    make_user(app, "tina", role="teacher")
    assert login(zh_client, "tina").status_code == 302
    files = [(io.BytesIO(png_bytes(color=(200, 10, 10))), "a.png"), (io.BytesIO(b"not an image"), "b.png")]
    response = zh_client.post(
        "/education/",
        data={"csrf_token": csrf_token(zh_client, "/education/"), "image": files},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302 and response.headers["Location"].startswith("/batches/")
    body = zh_client.get(response.headers["Location"]).get_data(as_text=True)
    assert "已将 2 个文件加入队列；每个文件都会成为此批次中的一条记录。" in body
    assert "共 2 项：1 项已完成，1 项失败。" in body
    assert ">已完成</span>" in body and ">失败</span>" in body


def test_history_page_in_chinese(zh_alice):
    """The history page, its filters and its empty state are in Chinese."""
    body = zh_alice.get("/history/").get_data(as_text=True)
    assert title(body) == "历史记录 · Prism"
    assert "<h1>我的历史记录</h1>" in body
    assert "起始日期" in body and "截止日期" in body
    assert "这里还没有记录。从这里开始：" in body


def test_404_page_in_chinese(zh_client):
    """Error pages are translated."""
    response = zh_client.get("/no/such/page")
    body = response.get_data(as_text=True)
    assert response.status_code == 404
    assert html_lang(body) == "zh-Hans"
    assert "此处没有内容，或者您无权查看。" in body
    assert "返回首页" in body


def test_upload_rejection_in_chinese_audited_in_english(app, zh_alice):
    """An upload rejection is shown in Chinese, while the audit log keeps the English reason."""
    response = submit(zh_alice, text=None, image=b"this is not an image", filename="x.png")
    assert response.status_code == 400
    assert "该文件不是受支持的图像（DICOM、PNG、JPEG、WebP、GIF、BMP 或 TIFF）。" in response.get_data(as_text=True)
    [row] = audit_rows(app, "upload.rejected")
    assert row["details"]["reason"].startswith("The file is not a supported image")


def test_model_not_ready_message_in_chinese(app, zh_alice, monkeypatch):
    """A model that is not ready keeps the record pending with its text; the page explains why in Chinese."""

    def fail(self, *args, **kwargs):
        raise ModelUnavailable("sentiment", ModelState.LOADING, "The sentiment model is not ready yet: loading.")

    monkeypatch.setattr(ModelService, "sentiment", fail)
    response = submit(zh_alice, text="我的退款呢？")
    assert response.status_code == 302
    row = only_analysis(app)
    assert response.headers["Location"] == f"/history/{row.id}"
    assert (row.status, row.text) == ("pending", "我的退款呢？")
    assert row.error == "The sentiment model is not ready yet: loading."  # stored in English
    assert row.error_info["reason"] == "not_ready"
    body = zh_alice.get(response.headers["Location"]).get_data(as_text=True)
    assert "正在等待处理；此页面会自动更新。" in body
    assert "情感分析模型尚未就绪（加载中），请稍后再试。" in body
    assert ">排队中</span>" in body
    assert "我的退款呢？" in body
    assert "The sentiment model is not ready yet" not in body


def test_failed_model_message_keeps_english_detail(app, zh_clinician):
    """A model that failed to load fails the record, explained in Chinese; the English diagnosis is for admins."""
    slot = app.extensions["prism_models"].caption_slot

    def broken_loader(progress):
        raise OSError("weights missing")

    slot._loader = broken_loader
    response = submit(zh_clinician, "medical", text=None, image=png_bytes())
    assert response.status_code == 302
    assert only_analysis(app).status == "failed"
    body = zh_clinician.get(response.headers["Location"]).get_data(as_text=True)
    assert "模型未能完成此记录的分析。" in body
    assert "weights missing" not in body
    assert ">重试</button>" in body


def test_job_error_follows_the_reader_language(app):
    """job_error translates a reason the model service gave, and shows any other stored error as it is."""
    info = {"kind": "caption", "state": "loading", "reason": "not_ready", "message": "The caption model is not ready."}
    waiting = Analysis(error="The caption model is not ready.", error_info=info)
    refused = Analysis(error="The uploaded image is missing from storage.", error_info=None)
    with app.test_request_context(headers=ZH):
        assert job_error(waiting) == "图像描述模型尚未就绪（加载中），请稍后再试。"
        assert job_error(refused) == "The uploaded image is missing from storage."
    with app.test_request_context():
        assert job_error(waiting) == "The caption model is not ready."


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("busy", "Prism 正忙：情感分析模型当前的请求量超出了处理能力。"),
        ("error", "情感分析模型处理此输入时出错（详情：boom）。"),
    ],
)
def test_model_busy_and_error_messages_in_chinese(app, reason, expected):
    """Every reason the model service gives has its Chinese sentence."""
    with app.test_request_context(headers=ZH):
        exc = ModelUnavailable("sentiment", ModelState.READY, "boom", reason=reason)
        assert model_unavailable_message(exc).startswith(expected)


def test_json_api_stays_english(app, client):
    """The JSON API answers in English whatever the Accept-Language, since programs parse it."""
    make_user(app, "alice")
    headers = {"Authorization": f"Bearer {make_token(app, 'alice')}", **ZH}
    rejected = client.post(
        "/api/v1/predict",
        headers=headers,
        data={"image": (io.BytesIO(b"not an image"), "x.png")},
        content_type="multipart/form-data",
    )
    assert rejected.status_code == 400
    assert rejected.json["error"]["message"].startswith("The file is not a supported image")
    missing = client.get("/api/v1/analyses/999", headers=headers)
    assert missing.json["error"]["message"] == "No such analysis."
    unknown = client.get("/api/v1/nothing", headers=headers)
    assert unknown.json["error"]["message"] == "There is nothing here, or it is not yours to see."


def test_switcher_overrides_accept_language(client):
    """/lang/zh stores the choice in the session; it beats Accept-Language until /lang/en changes it."""
    response = client.get("/lang/zh?next=/register", headers={"Accept-Language": "en-US"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/register"
    with client.session_transaction() as session:
        assert session["locale"] == "zh"
    body = client.get("/login", headers={"Accept-Language": "en-US"}).get_data(as_text=True)
    assert html_lang(body) == "zh-Hans" and "<h1>登录</h1>" in body
    client.get("/lang/en?next=/login")
    body = client.get("/login", headers=ZH).get_data(as_text=True)
    assert html_lang(body) == "en" and "<h1>Sign in</h1>" in body


def test_switcher_links_point_back_to_the_page(zh_client):
    """The header offers both languages, each named in itself, returning to the current page."""
    body = zh_client.get("/register?x=1").get_data(as_text=True)
    assert 'href="/lang/en?next=/register?x%3D1" lang="en" hreflang="en"' in body
    assert 'lang="zh-Hans" hreflang="zh-Hans" aria-current="true">中文</a>' in body


def test_choice_survives_login_and_logout(app, client):
    """Login and logout start a fresh session but keep the language choice."""
    make_user(app, "alice")
    client.get("/lang/zh")
    assert login(client, "alice").status_code == 302
    assert "退出登录" in client.get("/").get_data(as_text=True)
    token = csrf_token(client, "/account/")
    body = client.post("/logout", data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert "您已退出登录。" in body
    assert html_lang(body) == "zh-Hans"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "https:evil.example", "javascript:x"]
)
def test_switcher_ignores_unsafe_next(client, target):
    """An off-site ``next`` is not followed; the switch still happens and goes home."""
    response = client.get("/lang/zh", query_string={"next": target})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with client.session_transaction() as session:
        assert session["locale"] == "zh"


def test_switcher_refuses_unknown_languages(client):
    """Only the supported locales can be chosen."""
    assert client.get("/lang/fr").status_code == 404
    with client.session_transaction() as session:
        assert "locale" not in session


# --- The catalogue ---------------------------------------------------------------------------


def _po():
    with open(MESSAGES / "messages.po", "rb") as handle:
        return read_po(handle, locale="zh")


def _entries(catalog) -> dict:
    def plain(value):
        return tuple(value) if isinstance(value, list | tuple) else value

    return {(message.context, plain(message.id)): plain(message.string) for message in catalog if message.id}


def test_every_message_is_translated():
    """Every msgid in the .po has a non-empty, non-fuzzy Chinese msgstr."""
    catalog = _po()
    untranslated = [
        message.id
        for message in catalog
        if message.id
        and (message.fuzzy or not all(message.string if isinstance(message.string, tuple) else (message.string,)))
    ]
    assert untranslated == []
    assert len(catalog) > 150


def test_translations_keep_placeholders():
    """Each translation uses exactly the placeholders of its msgid (a missing one would raise at runtime)."""
    placeholder = re.compile(r"%\((\w+)\)[sdr]")
    for message in _po():
        if not message.id:
            continue
        source = message.id[0] if isinstance(message.id, tuple) else message.id
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for string in strings:
            assert set(placeholder.findall(string)) == set(placeholder.findall(source)), message.id


def test_mo_is_compiled_from_the_po():
    """The committed .mo holds exactly what compiling the committed .po gives (run pybabel compile)."""
    compiled = io.BytesIO()
    write_mo(compiled, _po())
    compiled.seek(0)
    with open(MESSAGES / "messages.mo", "rb") as handle:
        committed = read_mo(handle)
    assert _entries(committed) == _entries(read_mo(compiled))


def test_po_matches_the_sources():
    """The .po holds exactly the strings marked in the code and templates (run pybabel extract/update)."""
    with open(ROOT / "babel.cfg") as handle:
        method_map, options_map = parse_mapping_cfg(handle)
    keywords = {**DEFAULT_KEYWORDS, "_l": None}
    extracted = {
        (context, message[0] if isinstance(message, tuple) else message)
        for _filename, _lineno, message, _comments, context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=keywords
        )
    }
    in_po = {
        (message.context, message.id[0] if isinstance(message.id, tuple) else message.id)
        for message in _po()
        if message.id
    }
    assert extracted - in_po == set(), "strings not in the .po yet"
    assert in_po - extracted == set(), "obsolete strings in the .po"


class _VisibleText(HTMLParser):
    """Text nodes and human-readable attributes, skipping <pre> (code samples) and <script>.

    ``value`` is shown only on <input> buttons; on <option>, <button> and other inputs it is the
    code the form sends (``accept``, ``uncertain``), not text a reader sees.
    """

    ATTRIBUTES = {"alt", "title", "placeholder", "aria-label", "data-confirm"}
    BUTTON_TYPES = {"submit", "button", "reset"}

    def __init__(self):
        super().__init__()
        self.skip = 0
        self.texts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "script", "style"):
            self.skip += 1
        self.texts += [value for name, value in attrs if name in self.ATTRIBUTES and value]
        if tag == "input" and dict(attrs).get("type") in self.BUTTON_TYPES:
            self.texts += [value for name, value in attrs if name == "value" and value]

    def handle_endtag(self, tag):
        if tag in ("pre", "script", "style"):
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.texts.append(data)


# Words that are the same in both languages: the product name, units and "AI".
_ALLOWED_WORDS = {"Prism", "UTC", "ms", "AI"}


@pytest.mark.parametrize("template", sorted(p.relative_to(ROOT) for p in (ROOT / "templates").rglob("*.html")), ids=str)
def test_templates_have_no_untranslated_text(template):
    """Heuristic: once Jinja tags, comments and {% trans %} blocks are removed, no English words remain
    in text or human-readable attributes (string literals inside {{ }} are not checked)."""
    source = (ROOT / template).read_text(encoding="utf-8")
    source = re.sub(r"{#.*?#}", "", source, flags=re.S)
    source = re.sub(r"{%-?\s*trans\b.*?{%-?\s*endtrans\s*-?%}", "", source, flags=re.S)
    source = re.sub(r"{{.*?}}|{%.*?%}", "", source, flags=re.S)
    parser = _VisibleText()
    parser.feed(source)
    words = {word for text in parser.texts for word in re.findall(r"[A-Za-z]{2,}", text)}
    assert words - _ALLOWED_WORDS == set()
