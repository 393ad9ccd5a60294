"""The service desk: category, text in screenshots, reply drafts, triage, and the admins' categories."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.conftest import audit_rows, client_for, csrf_token, png_bytes, queries_during, record_id, submit
from tests.test_history import decide
from webapp.extensions import db
from webapp.models import Analysis, InquiryCategory
from webapp.service_desk import message_language

pytestmark = pytest.mark.both_databases


def predictions_of(app, analysis_id: int) -> dict[str, object]:
    """Each prediction as a plain snapshot (value that counts, AI value, output, state), plus the job."""
    with app.app_context():
        analysis = db.session.get(Analysis, analysis_id)
        found: dict[str, object] = {"_tasks": analysis.tasks, "_status": analysis.status}
        for p in analysis.predictions:
            found[p.kind] = SimpleNamespace(
                value=p.value,
                ai_value=p.ai_value,
                output=p.output,
                model_id=p.model_id,
                review_state=p.review_state,
                final_label=p.final_label,
            )
        return found


def test_english_message_gets_sentiment_category_and_an_english_draft(app):
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text="I was charged twice on my invoice, I want a refund"))
    found = predictions_of(app, analysis_id)
    assert found["_status"] == "done" and found["_tasks"] == ["sentiment", "category", "reply"]
    assert found["category"].value == "billing"
    assert found["category"].model_id and set(found["category"].output["descriptions"]) >= {"billing", "shipping"}
    reply = found["reply"]
    assert reply.output["language"] == "en" and reply.output["category"] == "billing"
    assert reply.value.startswith("I am sorry about the trouble")  # a negative message gets an apology
    assert "charges on your account" in reply.value
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert "Billing" in page and "Prism never sends replies" in page


def test_chinese_message_gets_a_chinese_draft(app):
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text="我的发票被重复扣款了，请帮我退款"))
    found = predictions_of(app, analysis_id)
    assert found["category"].value == "billing"
    assert found["reply"].output["language"] == "zh"
    assert "我已核对您账户上的扣费记录" in found["reply"].value


def test_screenshot_text_is_read_and_feeds_the_category(app):
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text=None, image=png_bytes()))
    found = predictions_of(app, analysis_id)
    assert found["_tasks"] == ["ocr", "caption", "category", "reply"]
    assert found["ocr"].value and found["ocr"].model_id
    assert "category" in found and "sentiment" not in found
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert found["ocr"].value.splitlines()[0] in page


def test_the_agents_edited_reply_is_the_drafts_correction(app):
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text="My parcel never arrived, tracking shows nothing"))
    draft = predictions_of(app, analysis_id)["reply"].ai_value
    decide(agent, analysis_id, "reply", "correct", value="Dear customer, a new parcel is on its way.")
    reply = predictions_of(app, analysis_id)["reply"]
    assert reply.value == "Dear customer, a new parcel is on its way." and reply.ai_value == draft
    csv = agent.get("/history/export.csv").get_data(as_text=True)
    assert "a new parcel is on its way" in csv


def test_a_category_correction_must_be_an_active_category(app):
    agent = client_for(app, "agent")
    analysis_id = record_id(submit(agent, text="The app crashes with an error when I open it"))
    decide(agent, analysis_id, "category", "correct", value="no-such-category")
    assert predictions_of(app, analysis_id)["category"].review_state == "unreviewed"
    decide(agent, analysis_id, "category", "correct", value="account")
    category = predictions_of(app, analysis_id)["category"]
    assert (category.value, category.final_label) == ("account", "account")


def test_triage_lists_open_conversations_most_negative_first_and_closing_is_audited(app):
    agent = client_for(app, "agent")
    happy = record_id(submit(agent, text="Thanks, great service, I love it"))
    angry = record_id(submit(agent, text="Terrible, my order arrived broken, I want a refund"))
    page = agent.get("/service-desk/").get_data(as_text=True)
    assert page.index(f"/history/{angry}") < page.index(f"/history/{happy}")
    response = agent.post(
        f"/service-desk/conversations/{angry}/close", data={"csrf_token": csrf_token(agent, "/service-desk/")}
    )
    assert response.status_code == 302
    assert f"/history/{angry}" not in agent.get("/service-desk/").get_data(as_text=True)
    assert [row["target_id"] for row in audit_rows(app, "conversation.close")] == [str(angry)]
    record = agent.get(f"/history/{angry}").get_data(as_text=True)
    assert "Closed" in record and "Reopen" in record
    agent.post(
        f"/service-desk/conversations/{angry}/reopen", data={"csrf_token": csrf_token(agent, f"/history/{angry}")}
    )
    assert f"/history/{angry}" in agent.get("/service-desk/").get_data(as_text=True)


def test_closing_needs_csrf_and_ownership(app):
    agent = client_for(app, "agent")
    other = client_for(app, "other")
    analysis_id = record_id(submit(agent, text="Where is my parcel?"))
    assert agent.post(f"/service-desk/conversations/{analysis_id}/close").status_code == 400
    token = csrf_token(other, "/service/")
    assert other.post(f"/service-desk/conversations/{analysis_id}/close", data={"csrf_token": token}).status_code == 404
    with app.app_context():
        assert db.session.get(Analysis, analysis_id).closed_at is None


def test_admins_edit_categories_and_templates_and_new_drafts_use_them(app):
    admin = client_for(app, "boss", role="admin")
    agent = client_for(app, "agent")
    assert agent.get("/service-desk/categories").status_code == 403
    with app.app_context():
        billing_id = db.session.scalar(db.select(InquiryCategory.id).where(InquiryCategory.key == "billing"))
    url = f"/service-desk/categories/{billing_id}"
    form = {
        "csrf_token": csrf_token(admin, url),
        "name": "Billing",
        "description": "Invoices, charges and refunds. 发票、扣费和退款。",
        "position": "1",
        "active": "y",
        "template_en": "Our billing team will refund the duplicate charge within 5 days.",
        "template_zh": "我们的账务团队将在5天内退还重复扣款。",
    }
    assert admin.post(url, data=form).status_code == 302
    assert [row["details"]["key"] for row in audit_rows(app, "admin.category_change")] == ["billing"]
    analysis_id = record_id(submit(agent, text="I was charged twice for one invoice"))
    assert "within 5 days" in predictions_of(app, analysis_id)["reply"].value

    new = {
        "csrf_token": csrf_token(admin, "/service-desk/categories"),
        "key": "returns",
        "name": "Returns",
        "description": "Returning a product, exchange, return label. 退货、换货、退货标签。",
        "position": "7",
        "active": "y",
        "template_en": "Here is your return label.",
        "template_zh": "",
    }
    assert admin.post("/service-desk/categories", data=new).status_code == 302
    assert admin.post("/service-desk/categories", data={**new, "key": "Bad Key!"}).status_code == 200
    with app.app_context():
        returns = db.session.scalar(db.select(InquiryCategory).where(InquiryCategory.key == "returns"))
        assert [t.language for t in returns.templates] == ["en"] and returns.templates[0].updated_by == "boss"
    page = agent.get(f"/history/{analysis_id}").get_data(as_text=True)
    assert 'value="returns"' in page  # the correction menu offers the new category


@pytest.mark.parametrize(
    ("text", "language"),
    [("Hello there", "en"), ("你好，我的订单呢？", "zh"), ("订单 order 12345 没到", "zh"), ("", "en")],
)
def test_message_language(text, language):
    assert message_language(text) == language


def test_triage_reads_a_page_in_a_fixed_number_of_queries(app):
    """Each row's sentiment, category and owner come with the page, not one query per row."""
    agent = client_for(app, "agent")

    def triage():
        assert agent.get("/service-desk/").status_code == 200

    record_id(submit(agent, text="Where is my parcel?"))
    one = queries_during(app, triage)
    for text in ("My invoice is wrong", "The app crashes", "I cannot sign in"):
        record_id(submit(agent, text=text))
    assert queries_during(app, triage) == one
