"""The pages as the server sends them (no browser): headers, assets, keys."""

from __future__ import annotations

import re

import pytest

from api.server.blueprints.ui import content_security_policy

PAGES = ["/ui/", "/ui/chat", "/ui/jobs", "/ui/reports"]


@pytest.mark.parametrize("path", PAGES)
def test_a_page_is_html_with_only_local_assets_and_security_headers(client, path):
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert policy == content_security_policy()
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.text
    # the policy would block inline code: every script and style is a file of this server
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assets = re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page)
    assert len(assets) == 3  # the stylesheet, common.js and the page's script
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing from elsewhere


def test_home_redirects_to_the_assessment_page(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"] == "/ui/"


def test_with_keys_the_pages_need_none_and_ask_for_one(make_app):
    client = make_app(api_keys=("k-one",)).test_client()
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200
        assert 'data-keys-required="true"' in response.text
    assert client.get("/ui/static/common.js").status_code == 200
    assert client.get("/v1/models").status_code == 401  # the API the pages call still does
    assert 'data-keys-required="false"' in make_app().test_client().get("/ui/").text


def test_the_pages_are_not_in_the_openapi_spec(client):
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if path == "/" or path.startswith("/ui")]
