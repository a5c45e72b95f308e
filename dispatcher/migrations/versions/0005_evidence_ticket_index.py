"""an index on evidence.ticket_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 06:15:00

A ticket's page, its verification and the hard-negative export look its evidence up by
ticket; without an index each lookup read the whole table, which grows with every snapshot.
"""

from alembic import op


revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_evidence_ticket", "evidence", ["ticket_id"])


def downgrade() -> None:
    op.drop_index("ix_evidence_ticket", table_name="evidence")
