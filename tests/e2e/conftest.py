"""The e2e tests reuse the app tests' fixtures (real app + tasks layer + consumer on a free port)."""
from tests.app.conftest import fake_engine, fast_env  # noqa: F401 — re-exported fixtures
