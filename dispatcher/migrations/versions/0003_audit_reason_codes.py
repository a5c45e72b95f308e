"""audit reasons as a code with parameters

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00

Each audit row says why as a stable code and its parameters (dispatcher/reasons.py), which
the web pages translate, beside the English text in ``reason`` that the API keeps showing.
Rows written before have no code: the pages show their stored text.
"""

from alembic import op
import sqlalchemy as sa


revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason_code", sa.String(length=48), nullable=True,
                                      comment="a code from dispatcher/reasons.py; NULL in older rows"))
        batch_op.add_column(sa.Column("reason_params", sa.JSON(), nullable=True,
                                      comment="the parameters of reason_code"))


def downgrade() -> None:
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_column("reason_params")
        batch_op.drop_column("reason_code")
