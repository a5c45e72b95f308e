"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-24 06:30:13.311714
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('dead_letters',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('topic', sa.String(length=255), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('payload', sa.LargeBinary(), nullable=False, comment='the bytes as received (truncated)'),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_table('devices',
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('online', sa.Boolean(), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.JSON(), nullable=True, comment='the last status message'),
    sa.PrimaryKeyConstraint('device_id', name=op.f('pk_devices'))
    )
    op.create_table('incidents',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False, comment='open or closed'),
    sa.Column('lat', sa.Float(), nullable=False),
    sa.Column('lon', sa.Float(), nullable=False),
    sa.Column('grid_id', sa.String(length=64), nullable=True),
    sa.Column('street_id', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False, comment='camera, sensor or citizen: first seen by'),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('camera_ids', sa.JSON(), nullable=False),
    sa.Column('cleared_at', sa.DateTime(timezone=True), nullable=True, comment='when a camera or sensor last reported it gone'),
    sa.Column('track_keys', sa.JSON(), nullable=False, comment='device/source/track ids'),
    sa.Column('bbox', sa.JSON(), nullable=True, comment='last box seen by a camera (normalised)'),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index('ix_incidents_open_kind', ['status', 'kind'], unique=False)

    op.create_table('users',
    sa.Column('username', sa.String(length=64), nullable=False, comment='worker or supervisor id, or admin'),
    sa.Column('role', sa.String(length=16), nullable=False, comment='worker, supervisor or admin'),
    sa.Column('display_name', sa.String(length=80), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=True, comment='argon2; NULL means login disabled'),
    sa.Column('token_version', sa.Integer(), nullable=False, comment='bump to log out everywhere'),
    sa.Column('lat', sa.Float(), nullable=True, comment='last known position (workers)'),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('position_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('username', name=op.f('pk_users'))
    )
    op.create_table('tickets',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('category', sa.String(length=48), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('grid_id', sa.String(length=64), nullable=True),
    sa.Column('street_id', sa.String(length=64), nullable=True),
    sa.Column('worker_id', sa.String(length=64), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('lat', sa.Float(), nullable=False),
    sa.Column('lon', sa.Float(), nullable=False),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('assigned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('arrived_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('close_reason', sa.String(length=32), nullable=True, comment='fixed, cleared_by_camera, false_alarm, duplicate…'),
    sa.Column('reopen_count', sa.Integer(), nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False, comment='optimistic lock'),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_tickets_incident_id_incidents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tickets')),
    sa.UniqueConstraint('incident_id', name='uq_tickets_incident')
    )
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.create_index('ix_tickets_grid_status', ['grid_id', 'status'], unique=False)
        batch_op.create_index('ix_tickets_status', ['status'], unique=False)
        batch_op.create_index('ix_tickets_worker_status', ['worker_id', 'status'], unique=False)

    op.create_table('audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=80), nullable=False, comment='worker:w01, system, device:edge-01…'),
    sa.Column('transition', sa.String(length=24), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('worker_id', sa.String(length=64), nullable=True, comment='the assignee after the transition'),
    sa.Column('from_worker_id', sa.String(length=64), nullable=True, comment='the assignee before it'),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('pushed', sa.Boolean(), nullable=False, comment='pushes delivered'),
    sa.Column('metric_sent', sa.Boolean(), nullable=False, comment='point in InfluxDB'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_audit_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit'))
    )
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.create_index('ix_audit_metric_unsent', ['metric_sent'], unique=False)
        batch_op.create_index('ix_audit_ticket', ['ticket_id'], unique=False)
        batch_op.create_index('ix_audit_unpushed', ['pushed'], unique=False)

    op.create_table('evidence',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='snapshot, crop, after_photo, verify'),
    sa.Column('path', sa.String(length=255), nullable=False, comment='relative to the evidence folder'),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('bytes', sa.Integer(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_evidence_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evidence'))
    )
    op.create_table('events',
    sa.Column('event_id', sa.String(length=36), nullable=False, comment="the device's idempotency key"),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('source_id', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=48), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('device_ts', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ts', sa.DateTime(timezone=True), nullable=False, comment='time used for ordering and merging'),
    sa.Column('ts_source', sa.String(length=16), nullable=False, comment='device, or received if implausible'),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lat', sa.Float(), nullable=True),
    sa.Column('lon', sa.Float(), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('evidence_id', sa.Integer(), nullable=True),
    sa.Column('body', sa.JSON(), nullable=False, comment='the event without its snapshot'),
    sa.ForeignKeyConstraint(['evidence_id'], ['evidence.id'], name=op.f('fk_events_evidence_id_evidence')),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_events_incident_id_incidents')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_device_seq', ['device_id', 'seq'], unique=False)
        batch_op.create_index('ix_events_incident', ['incident_id'], unique=False)

    op.create_table('verifications',
    sa.Column('command_id', sa.String(length=36), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('camera_id', sa.String(length=64), nullable=False),
    sa.Column('device_id', sa.String(length=64), nullable=False),
    sa.Column('asked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=True, comment='clear, still_present, error'),
    sa.Column('evidence_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['evidence_id'], ['evidence.id'], name=op.f('fk_verifications_evidence_id_evidence')),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], name=op.f('fk_verifications_ticket_id_tickets')),
    sa.PrimaryKeyConstraint('command_id', name=op.f('pk_verifications'))
    )
    with op.batch_alter_table('verifications', schema=None) as batch_op:
        batch_op.create_index('ix_verifications_ticket', ['ticket_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('verifications', schema=None) as batch_op:
        batch_op.drop_index('ix_verifications_ticket')

    op.drop_table('verifications')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_incident')
        batch_op.drop_index('ix_events_device_seq')

    op.drop_table('events')
    op.drop_table('evidence')
    with op.batch_alter_table('audit', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_unpushed')
        batch_op.drop_index('ix_audit_ticket')
        batch_op.drop_index('ix_audit_metric_unsent')

    op.drop_table('audit')
    with op.batch_alter_table('tickets', schema=None) as batch_op:
        batch_op.drop_index('ix_tickets_worker_status')
        batch_op.drop_index('ix_tickets_status')
        batch_op.drop_index('ix_tickets_grid_status')

    op.drop_table('tickets')
    op.drop_table('users')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_open_kind')

    op.drop_table('incidents')
    op.drop_table('devices')
    op.drop_table('dead_letters')

