"""The integration tier: the real packaged models, SQLite, PostgreSQL and the demo index.

The session's expensive things (the demo index, PostgreSQL) and the per-test fixtures over
them (``demo_data_dir``, ``pg_url``) are in tests/conftest.py, shared with the files still at
the top of tests/ and, for the demo index, with the e2e tier's stack."""
