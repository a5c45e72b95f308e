"""timers on tickets, incident tracks, citizen reports, device clock offsets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 07:10:00

Tickets keep the category's timing terms from when they were opened and the time their next
timer is due (so timers are rebuilt from the store after a restart); each camera track or
sensor attached to an incident is a row (found by key, cleared one by one); citizen reports
arrive through Open311; heartbeats give each device's clock offset.
"""

from alembic import op
import sqlalchemy as sa


revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accept_timeout_s", sa.Float(), nullable=False,
                                      server_default="600",
                                      comment="the category's terms at opening"))
        batch_op.add_column(sa.Column("remind_before_s", sa.Float(), nullable=False,
                                      server_default="900"))
        batch_op.add_column(sa.Column("verify_timeout_s", sa.Float(), nullable=False,
                                      server_default="120"))
        batch_op.add_column(sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True,
                                      comment="SLA reminder sent (once)"))
        batch_op.add_column(sa.Column("breached_at", sa.DateTime(timezone=True), nullable=True,
                                      comment="SLA deadline passed; escalated (once)"))
        batch_op.add_column(sa.Column("review_at", sa.DateTime(timezone=True), nullable=True,
                                      comment="verification gave up; supervisor asked to review"))
        batch_op.add_column(sa.Column("timer_at", sa.DateTime(timezone=True), nullable=True,
                                      comment="when the next timer of this ticket is due"))
        batch_op.create_index("ix_tickets_timer_at", ["timer_at"], unique=False)

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.create_index("ix_incidents_open_kind_lat", ["status", "kind", "lat"],
                              unique=False)

    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clock_offset_s", sa.Float(), nullable=True,
                                      comment="device clock minus our clock, from heartbeats"))

    op.create_table(
        "incident_tracks",
        sa.Column("track_key", sa.String(length=200), nullable=False,
                  comment="device/source/track, or device/sensor"),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=True,
                  comment="the source reported it gone (NULL: still sees it)"),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_incident_tracks_incident_id_incidents")),
        sa.PrimaryKeyConstraint("track_key", name=op.f("pk_incident_tracks")),
    )
    with op.batch_alter_table("incident_tracks", schema=None) as batch_op:
        batch_op.create_index("ix_incident_tracks_incident", ["incident_id"], unique=False)

    op.create_table(
        "citizen_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False,
                  comment="Open311 service_request_id"),
        sa.Column("service_code", sa.String(length=48), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("lat", sa.Float(), nullable=False),
        sa.Column("lon", sa.Float(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("address_string", sa.String(length=255), nullable=True),
        sa.Column("media_url", sa.String(length=1000), nullable=True),
        sa.Column("email", sa.String(length=255), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("first_name", sa.String(length=80), nullable=True),
        sa.Column("last_name", sa.String(length=80), nullable=True),
        sa.Column("client_device_id", sa.String(length=64), nullable=True,
                  comment="the reporting app's device_id"),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.event_id"],
                                name=op.f("fk_citizen_reports_event_id_events")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_citizen_reports_incident_id_incidents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_citizen_reports")),
    )
    with op.batch_alter_table("citizen_reports", schema=None) as batch_op:
        batch_op.create_index("ix_citizen_reports_incident", ["incident_id"], unique=False)
        batch_op.create_index("ix_citizen_reports_requested", ["requested_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("citizen_reports", schema=None) as batch_op:
        batch_op.drop_index("ix_citizen_reports_requested")
        batch_op.drop_index("ix_citizen_reports_incident")
    op.drop_table("citizen_reports")
    with op.batch_alter_table("incident_tracks", schema=None) as batch_op:
        batch_op.drop_index("ix_incident_tracks_incident")
    op.drop_table("incident_tracks")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("clock_offset_s")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_index("ix_incidents_open_kind_lat")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index("ix_tickets_timer_at")
        for column in ("timer_at", "review_at", "breached_at", "reminded_at",
                       "verify_timeout_s", "remind_before_s", "accept_timeout_s"):
            batch_op.drop_column(column)
