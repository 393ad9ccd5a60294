"""The optional reply-writing model (PRISM_REPLY_MODEL): loaded through the app's own loader from a
local directory, answering a chat through the model service; and the service desk using it."""

from __future__ import annotations

import pytest

from tests.conftest import client_for, make_app, record_id, submit
from tests.inference.tiny_models import build_reply_writer, tiny_settings
from webapp.extensions import db
from webapp.inference import ModelService
from webapp.models import Analysis


@pytest.fixture(scope="module")
def writer_dir(tmp_path_factory):
    return build_reply_writer(tmp_path_factory.mktemp("models") / "tiny-chat-writer")


def test_a_local_chat_model_writes_through_the_service(writer_dir, tmp_path):
    """The writer loads from a local directory through the app's loader, with PRISM_REPLY_MAX_NEW_TOKENS
    and a pad token (GPT-2 has none); greedy decoding gives the same reply twice."""
    service = ModelService(tiny_settings(tmp_path, reply_model=str(writer_dir), reply_max_new_tokens=6))
    try:
        assert service.writes_replies
        conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "my parcel is late"}]
        written = service.write_reply(conversation)
        assert written.text and written.text == service.write_reply(conversation).text
        model = service.reply_slot.get()
        assert model.max_new_tokens == 6
        assert model.model.generation_config.pad_token_id == model.tokenizer.eos_token_id
        assert written.model_id == writer_dir.name and written.revision and written.latency_ms > 0
        assert {status.kind for status in service.statuses()} >= {"reply"}
    finally:
        service.close()


def test_without_a_writer_model_there_is_no_reply_slot(tmp_path):
    """Unset, no reply model exists: no status, nothing to load."""
    service = ModelService(tiny_settings(tmp_path))
    try:
        assert not service.writes_replies
        assert "reply" not in {status.kind for status in service.statuses()}
    finally:
        service.close()


def test_a_checkpoint_without_a_chat_template_is_refused(writer_dir, tmp_path):
    """A plain language model (no chat template) fails to load, saying why."""
    import shutil

    plain = tmp_path / "no-template"
    shutil.copytree(writer_dir, plain)
    config = plain / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"unused_template"'))
    for extra in plain.glob("chat_template.*"):
        extra.unlink()
    service = ModelService(tiny_settings(tmp_path, reply_model=str(plain), load_wait_seconds=30.0))
    try:
        from webapp.inference import ModelUnavailable

        with pytest.raises(ModelUnavailable):
            service.write_reply([{"role": "user", "content": "hi"}])
        [status] = [s for s in service.statuses() if s.kind == "reply"]
        assert "chat template" in (status.detail or "")
    finally:
        service.close()


def test_the_service_desk_drafts_with_the_writer_model_when_configured(tmp_path):
    """With PRISM_REPLY_MODEL set (fake backend here), the draft is the model's, stamped with its id;
    the agent still edits it as a correction."""
    app = make_app(tmp_path, PRISM_REPLY_MODEL="any-writer")
    agent = client_for(app, "agent")
    response = submit(agent, text="My parcel never arrived")
    analysis_id = record_id(response)
    with app.app_context():
        reply = db.session.get(Analysis, analysis_id).prediction("reply")
        assert reply.model_id == "prism/fake-reply"
        assert reply.ai_value.startswith("[fake reply] ") and "My parcel never arrived" in reply.ai_value


def test_models_check_runs_the_reply_writer_too(tmp_path):
    """`models check` smoke-tests every configured model, the optional writer included."""
    app = make_app(tmp_path, PRISM_REPLY_MODEL="any-writer")
    result = app.test_cli_runner().invoke(args=["models", "check", "--timeout", "30"])
    assert result.exit_code == 0, result.output
    assert "reply smoke test: '[fake reply] Say hello.'" in result.output
