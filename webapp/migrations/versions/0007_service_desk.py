"""The service desk: inquiry categories and reply templates (seeded, then the admins' to edit), and
open / closed conversations; a DICOM upload's frames, window and non-identifying metadata; region
annotations and the sign-off of clinical cases.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# (key, name, description): the descriptions are what the category model compares messages with, so
# they say what such messages are about, in English and Chinese, the customers' two languages.
CATEGORIES = (
    (
        "billing",
        "Billing",
        "Billing and payments: invoices, charges, refunds, being charged twice, prices, subscriptions. "
        "账单与付款：发票、扣费、退款、重复扣款、价格、订阅。",
    ),
    (
        "technical",
        "Technical problem",
        "Technical problem: the app or website crashes, shows an error, a bug, a feature does not work. "
        "技术问题：应用或网站崩溃、报错、故障、功能无法使用。",
    ),
    (
        "shipping",
        "Shipping",
        "Shipping and delivery: parcels, tracking numbers, late or lost deliveries, damaged packages, addresses. "
        "物流与配送：包裹、快递单号、配送延迟或丢失、包装破损、收货地址。",
    ),
    (
        "account",
        "Account",
        "Account access: signing in, password reset, profile, changing the email address, closing the account. "
        "账户：登录、重置密码、个人资料、更换邮箱、注销账户。",
    ),
    (
        "complaint",
        "Complaint",
        "Complaint about the service or staff: rude support, long waits, dissatisfaction, asking for a manager. "
        "投诉：服务或员工态度差、等待太久、不满意、要求主管处理。",
    ),
    (
        "other",
        "Other",
        "Anything else: general questions, feedback, suggestions, partnerships. 其他：一般咨询、意见反馈、建议、合作。",
    ),
)
TEMPLATES = {
    "billing": (
        "I have checked the charges on your account. Any amount charged in error will be refunded to your "
        "original payment method; I will confirm by email once it is done.",
        "我已核对您账户上的扣费记录。错误扣除的款项将退回您的原支付方式，处理完成后我会发邮件确认。",
    ),
    "technical": (
        "I am sorry the app is not working as it should. Could you tell me your device, the app version and "
        "what you did just before the problem? Meanwhile, updating to the latest version often helps.",
        "很抱歉应用没有正常工作。请告诉我您的设备型号、应用版本以及出现问题前的操作。同时，升级到最新版本通常会有帮助。",
    ),
    "shipping": (
        "I have looked up your order and asked the carrier for an update. You can follow the parcel with "
        "the tracking link in your order confirmation.",
        "我已查询您的订单并向承运商询问最新进展。您可以通过订单确认邮件中的物流链接跟踪包裹。",
    ),
    "account": (
        "For your security, please use the 'Forgot password' link on the sign-in page; the reset email "
        "arrives within a few minutes. If it does not, reply here and I will help you further.",
        "为了您的账户安全，请使用登录页面上的“忘记密码”链接，重置邮件会在几分钟内送达。如未收到，请回复此消息，我会继续协助您。",
    ),
    "complaint": (
        "Thank you for telling us. I have passed your feedback to the team lead, who will review what "
        "happened and get back to you personally.",
        "感谢您告诉我们。我已将您的反馈转交给团队负责人，他会核实情况并亲自与您联系。",
    ),
    "other": (
        "Thank you for your message. I will look into it and get back to you shortly.",
        "感谢您的留言。我会尽快查看并回复您。",
    ),
}


def upgrade():
    categories = op.create_table(
        "inquiry_category",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
        sqlite_autoincrement=True,
    )
    templates = op.create_table(
        "reply_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category_id", sa.Integer(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["category_id"], ["inquiry_category.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("category_id", "language", name="uq_reply_template_category_language"),
        sqlite_autoincrement=True,
    )
    op.bulk_insert(
        categories,
        [
            {"id": index, "key": key, "name": name, "description": description, "position": index, "active": True}
            for index, (key, name, description) in enumerate(CATEGORIES, start=1)
        ],
    )
    rows = []
    for index, (key, _name, _description) in enumerate(CATEGORIES, start=1):
        for language, body in zip(("en", "zh"), TEMPLATES[key], strict=True):
            rows.append({"category_id": index, "language": language, "body": body, "updated_by": None})
    op.bulk_insert(templates, [{**row, "updated_at": _now()} for row in rows])
    if op.get_bind().dialect.name == "postgresql":  # explicit ids: move the sequence past them
        op.execute(
            "SELECT setval(pg_get_serial_sequence('inquiry_category', 'id'), (SELECT max(id) FROM inquiry_category))"
        )
    op.add_column("analysis", sa.Column("closed_at", sa.DateTime(), nullable=True))
    op.add_column("analysis", sa.Column("closed_by", sa.String(length=64), nullable=True))
    op.add_column("analysis", sa.Column("image_meta", sa.JSON(), nullable=True))
    op.add_column("analysis", sa.Column("signed_off_at", sa.DateTime(), nullable=True))
    op.add_column("analysis", sa.Column("signed_off_by", sa.String(length=64), nullable=True))
    op.create_table(
        "region_annotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("shape", sa.String(length=8), nullable=False),
        sa.Column("x", sa.Double(), nullable=False),
        sa.Column("y", sa.Double(), nullable=False),
        sa.Column("width", sa.Double(), nullable=True),
        sa.Column("height", sa.Double(), nullable=True),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("shape IN ('rect', 'point')", name="ck_region_annotation_shape"),
        sa.ForeignKeyConstraint(["analysis_id"], ["analysis.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_region_annotation_analysis_id", "region_annotation", ["analysis_id"])


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(tzinfo=None)


def downgrade():
    # The kinds this revision's code added: the code of 0006 cannot load them (no such polymorphic
    # identity). Reviews first: foreign keys are off while migrating, so nothing cascades.
    new_kinds = "('ocr', 'category', 'reply')"
    op.execute(f"DELETE FROM review WHERE prediction_id IN (SELECT id FROM prediction WHERE kind IN {new_kinds})")  # noqa: S608
    op.execute(f"DELETE FROM prediction WHERE kind IN {new_kinds}")  # noqa: S608
    op.drop_index("ix_region_annotation_analysis_id", table_name="region_annotation")
    op.drop_table("region_annotation")
    op.drop_column("analysis", "signed_off_by")
    op.drop_column("analysis", "signed_off_at")
    op.drop_column("analysis", "image_meta")
    op.drop_column("analysis", "closed_by")
    op.drop_column("analysis", "closed_at")
    op.drop_table("reply_template")
    op.drop_table("inquiry_category")
