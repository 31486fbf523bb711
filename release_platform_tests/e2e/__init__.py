"""End-to-end tests: the real `dagster dev` (webserver + daemon) over a seeded demo LIMS, the UI in Chromium,
daemon-executed backfills, and the whole stack on PostgreSQL."""
