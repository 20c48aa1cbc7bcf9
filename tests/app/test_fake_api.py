"""The UI tests' stand-in for ``tasks.api`` keeps the real API's names, signatures and classes."""
from __future__ import annotations

import inspect

from tasks import api

from . import fake_api
from .fake_api import FakeApi


def _shape(fn) -> list[tuple[str, object, object]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_fake_api_has_the_real_functions_with_the_same_signatures():
    real = {n: getattr(api, n) for n in api.__all__ if inspect.isfunction(getattr(api, n))}
    fake = {n: getattr(FakeApi, n) for n in dir(FakeApi) if not n.startswith("_") and inspect.isfunction(getattr(FakeApi, n))}
    assert sorted(fake) == sorted(real), "tests/app/fake_api.py must offer exactly tasks.api's functions"
    for name, fn in real.items():
        # the fake's methods are bound to an instance: its ``self`` is not part of the API
        assert _shape(fn) == _shape(fake[name])[1:], f"FakeApi.{name} differs from tasks.api.{name}"


def test_fake_api_uses_the_real_job_view_and_errors():
    assert fake_api.JobView is api.JobView
    assert fake_api.JobNotFound is api.JobNotFound and fake_api.InvalidState is api.InvalidState
    f = FakeApi()
    job_id = f.submit("u", {"data": {"target": "quadrant"}, "method": {"name": "ce"}, "optim": {"steps": 5}})
    view = f.get_job("u", job_id)
    assert isinstance(view, api.JobView) and view.state == api.QUEUED
