"""the newest applied event per track key, so late events are not applied

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 09:00:00

After a broker restart a device's events can reach the dispatcher out of the device's order.
Each camera track or sensor keeps the device ``seq`` (and device time) of the newest event the
intake applied; an event below it arrived late and is stored without changing its incident.
Existing stores start with no rows: every track's next event is applied as before.
"""

from alembic import op
import sqlalchemy as sa


revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "track_seqs",
        sa.Column("track_key", sa.String(length=200), nullable=False,
                  comment="device/source/track, or device/sensor"),
        sa.Column("seq", sa.BigInteger(), nullable=False,
                  comment="the newest applied event's device seq"),
        sa.Column("device_ts", sa.DateTime(timezone=True), nullable=False,
                  comment="that event's device time"),
        sa.PrimaryKeyConstraint("track_key", name=op.f("pk_track_seqs")),
    )


def downgrade() -> None:
    op.drop_table("track_seqs")
