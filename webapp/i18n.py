"""Interface language: English (the default) and Simplified Chinese, with Flask-Babel.

The locale of a request is, first match wins: the choice made with the language switcher (kept in
the session; a signed-in user's choice is also saved on the account and put back in the session at
each sign-in), the signed-in user's saved language, the browser's best Accept-Language match,
English. JSON responses (the API and ``/healthz``) are always English: programs parse them, and
their callers rarely send a language.
"""

from __future__ import annotations

from flask import g, has_request_context, request, session
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.datastructures import LanguageAccept

from .errors import wants_json
from .inference.types import ModelState, ModelUnavailable

DEFAULT_LOCALE = "en"
# Locale -> (its <html lang> tag, its name in itself for the switcher). "zh" is Simplified Chinese.
LANGUAGES = {"en": ("en", "English"), "zh": ("zh-Hans", "中文")}
LOCALES = tuple(LANGUAGES)
SESSION_KEY = "locale"
# Subtags that mean Traditional Chinese, which this catalogue is not (zh-TW, zh-HK, zh-MO, zh-Hant).
_TRADITIONAL_SUBTAGS = frozenset({"hant", "tw", "hk", "mo"})

# Display names of stored codes; the codes themselves stay in URLs, CSS classes, exports and the API.
SENTIMENT_NAMES = {"negative": _l("Negative"), "neutral": _l("Neutral"), "positive": _l("Positive")}
BAND_NAMES = {"high": _l("high"), "medium": _l("medium"), "low": _l("low")}
ROLE_NAMES = {"user": _l("user"), "teacher": _l("teacher"), "clinician": _l("clinician"), "admin": _l("admin")}
# Lower case, no acronyms: templates capitalise them with Jinja's ``capitalize``, which lowercases the rest.
MODEL_NAMES = {
    "caption": _l("caption model"),
    "sentiment": _l("sentiment model"),
    "ocr": _l("text recognition model"),
    "embedding": _l("text embedding model"),
    "reply": _l("reply-writing model"),
    "agreement": _l("image-text agreement model"),
}
STATE_NAMES = {
    "not_loaded": _l("not loaded"),
    "downloading": _l("downloading"),
    "loading": _l("loading"),
    "ready": _l("ready"),
    "failed": _l("failed"),
}
REVIEW_NAMES = {
    "unreviewed": _l("not reviewed"),
    "accepted": _l("accepted"),
    "corrected": _l("corrected"),
    "rejected": _l("rejected"),
}
STATUS_NAMES = {"pending": _l("queued"), "running": _l("running"), "done": _l("done"), "failed": _l("failed")}
KIND_NAMES = {
    "caption": _l("Caption"),
    "sentiment": _l("Sentiment"),
    "ocr": _l("Text in the image"),
    "category": _l("Category"),
    "reply": _l("Reply draft"),
    "grade": _l("Grade"),
    "fusion": _l("Overall sentiment (text and image)"),
    "agreement": _l("Image matches the text"),
}
AGREEMENT_NAMES = {"matches": _l("Matches"), "mismatch": _l("Does not match")}
# Keys: webapp.fusion.JOINT_EMBEDDING and CAPTION_AND_OCR, as stored in an agreement's output.
AGREEMENT_METHOD_NAMES = {
    "joint image-text embedding": _l("joint image-text embedding"),
    "caption and OCR text vs text": _l("caption and OCR text vs text"),
}
FUSION_PART_NAMES = {"text": _l("Text"), "caption": _l("Image caption"), "ocr": _l("Text in the image")}
NAMES = {
    "sentiment": SENTIMENT_NAMES,
    "band": BAND_NAMES,
    "review": REVIEW_NAMES,
    "status": STATUS_NAMES,
    "kind": KIND_NAMES,
    "agreement": AGREEMENT_NAMES,
    "agreement_method": AGREEMENT_METHOD_NAMES,
    "fusion_part": FUSION_PART_NAMES,
    "role": ROLE_NAMES,
    "model": MODEL_NAMES,
    "state": STATE_NAMES,
}


def match_accept_language(accept: LanguageAccept) -> str | None:
    """The first supported locale in the client's order of preference: en-*, and zh, zh-CN, zh-SG or
    zh-Hans for Simplified Chinese; None when nothing matches (the caller falls back to English)."""
    for value, quality in accept:
        if quality <= 0:
            continue
        language, *subtags = value.lower().replace("_", "-").split("-")
        if language == "zh" and not _TRADITIONAL_SUBTAGS.isdisjoint(subtags):
            continue
        if language in LOCALES:
            return language
    return None


def select_locale() -> str | None:
    """Flask-Babel's locale selector. None (Flask-Babel's default, English) outside a request."""
    if not has_request_context() or wants_json():
        return None
    chosen = session.get(SESSION_KEY)
    if chosen in LOCALES:
        return chosen
    if current_user.is_authenticated and current_user.language in LOCALES:
        return current_user.language  # e.g. a session restored from a remember cookie
    return match_accept_language(request.accept_languages)


def chosen_locale() -> str | None:
    """The language picked with the switcher in this session, if any (to save on a new account)."""
    chosen = session.get(SESSION_KEY)
    return chosen if chosen in LOCALES else None


def restore_locale(user) -> None:
    """Put ``user``'s saved language into the session at sign-in (nothing when they never chose one)."""
    if user.language in LOCALES:
        session[SESSION_KEY] = user.language


def current_locale() -> str:
    locale = get_locale()
    return locale.language if locale is not None and locale.language in LOCALES else DEFAULT_LOCALE


def html_lang() -> str:
    """The ``<html lang>`` value: a BCP 47 tag naming the script for Chinese."""
    return LANGUAGES[current_locale()][0]


def in_english(message: object) -> str:
    """``message`` (a lazy string, or an exception carrying one) rendered in English, for the audit
    log, which must read the same whoever triggered the event."""
    with force_locale(DEFAULT_LOCALE):
        return str(message)


def clear_session_keeping_locale() -> None:
    """``session.clear()`` for login and logout, keeping only the language choice: a display
    preference, validated against LOCALES, is no authentication state to fixate."""
    chosen = session.get(SESSION_KEY)
    session.clear()
    if chosen in LOCALES:
        session[SESSION_KEY] = chosen


def is_admin() -> bool:
    """Whether the signed-in reader (page or API token) is an administrator, who may read diagnoses."""
    user = g.get("api_user") or current_user
    return bool(user and user.is_authenticated and user.role == "admin")


def job_error(analysis) -> str:
    """Why a job failed or waits, in the reader's language when the model service gave the reason."""
    info = analysis.error_info
    if not info:
        return analysis.error or ""
    exc = ModelUnavailable(
        info["kind"], ModelState(info["state"]), info["message"], reason=info["reason"], detail=info.get("detail", "")
    )
    return model_unavailable_message(exc)


def model_unavailable_message(exc: ModelUnavailable) -> str:
    """What to tell the reader when a model cannot answer.

    The model service speaks English only (it knows nothing of Flask). Its message is shown as is in
    English; other languages get a sentence chosen by ``exc.reason``, plus the English message where
    it carries a diagnosis worth reporting (what the model raised). Why a model could not be loaded
    (exception text, paths, the fix) is for administrators: everyone else reads one short sentence.
    """
    model = MODEL_NAMES.get(exc.kind, exc.kind)
    if exc.reason == "failed":
        if not is_admin():
            return _("The %(model)s is not available on this server yet; an administrator has been told.", model=model)
        # Rows stored before the detail was kept apart carry the diagnosis in their message.
        return _("The %(model)s could not be loaded (details: %(detail)s).", model=model, detail=exc.detail or str(exc))
    if current_locale() == DEFAULT_LOCALE:
        return str(exc)
    if exc.reason == "busy":
        return _(
            "Prism is busy: the %(model)s has more requests than it can take right now. "
            "Please try again in a few seconds.",
            model=model,
        )
    if exc.reason == "error":
        return _("The %(model)s failed on this input (details: %(detail)s).", model=model, detail=str(exc))
    state = STATE_NAMES.get(exc.state.value, exc.state.value)  # "not_ready": loading or downloading
    return _("The %(model)s is not ready yet (%(state)s). Try again shortly.", model=model, state=state)
