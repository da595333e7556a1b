"""The API tests' fixtures (an app over fakes under a temp home), for the security tests."""

from tests.api.conftest import (  # noqa: F401
    app,
    claims_db,
    client,
    compare_app,
    context,
    fake_compare,
    make_app,
    release,
    settings,
)
