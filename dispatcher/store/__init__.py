"""The ticket store: SQLAlchemy Core tables, engine setup and migrations."""
