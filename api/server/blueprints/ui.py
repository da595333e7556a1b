"""The web pages for people: ``/ui/`` (assess photos), ``/ui/chat``, ``/ui/jobs``, ``/ui/reports``.

The pages are Jinja templates with one stylesheet and a plain script each, served from
``api/server/static/ui`` (nothing is fetched from the internet). They call the same ``/v1/*`` API
as any client, from the browser: with API keys configured the page asks for a key once, keeps it
in ``sessionStorage`` and sends it as a Bearer header, so the pages themselves need no key.
Their responses carry a Content-Security-Policy that allows only this server's scripts and
styles: every script and style lives in a static file.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

from flask import Blueprint, Response, redirect, render_template, url_for

from api.server.services import services

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="../templates",
    static_folder="../static/ui",
    static_url_path="/static",
)
# data: images are the compare report's plots; blob: frames are reports fetched with the key
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' {report_style}; "
    "img-src 'self' data: blob:; frame-src blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGES = {"ui.assess": "Assess", "ui.chat": "Chat", "ui.jobs": "Jobs", "ui.reports": "Reports"}


@functools.cache
def content_security_policy() -> str:
    """The pages' policy. A report shown in the page's frame (a blob: document) inherits it, so
    ``style-src`` also allows the compare report's one inline stylesheet, by its hash."""
    from agents.compare.report import to_html

    style = re.search(r"<style>(.*?)</style>", to_html([], Path(), ""), re.DOTALL)
    assert style is not None, "the compare report has no <style> element"
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    return CSP.format(report_style=f"'sha256-{digest}'")


def _page(template: str, endpoint: str) -> str:
    settings = services().settings
    return render_template(
        f"ui/{template}",
        pages=PAGES,
        current=endpoint,
        keys_required=bool(settings.all_keys),
        max_images=settings.max_images,
    )


@bp.get("/")
def assess() -> str:
    return _page("assess.html", "ui.assess")


@bp.get("/chat")
def chat() -> str:
    return _page("chat.html", "ui.chat")


@bp.get("/jobs")
def jobs() -> str:
    return _page("jobs.html", "ui.jobs")


@bp.get("/reports")
def reports() -> str:
    return _page("reports.html", "ui.reports")


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


root = Blueprint("ui_root", __name__)
root.after_request(security_headers)


# The HTML pages are not part of the JSON API: /openapi.json leaves them out.
PAGE_BLUEPRINTS = (bp.name, root.name)


@root.get("/")
def home() -> Response:
    """The pages' home: ``/`` sends a browser to the assessment page."""
    return redirect(url_for("ui.assess"))
