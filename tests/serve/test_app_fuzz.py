"""Fuzz the OpenAPI description with schemathesis against a real server: never a 5xx.

Every operation gets a bounded number of generated requests (valid and invalid parameters,
bodies and paths) with a valid token and with none, and each request naming a series is sent
once more naming a real one (so the other parameters meet the checks behind the lookup); none
may answer 5xx.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from tests.serve.app_support import make_served

from atlas.serve.app import create_app
from atlas.serve.server import serve_in_thread

#: generated requests per operation
CASES = 30


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    s = make_served(tmp_path_factory.mktemp("app-fuzz"), queue_wait_s=30.0)
    with serve_in_thread(create_app(s.ctx)) as url:
        yield url, s
    s.ctx.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    url, _ = fuzz_server
    return schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.fixture(scope="module")
def token(fuzz_server):
    return fuzz_server[1].tokens["all"]


def test_no_server_error(api_schema, token, fuzz_server) -> None:
    # hypothesis runs each operation's strategy here (schemathesis's pytest plugin does not
    # run under this pytest version)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    names = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"GET /api/series", "POST /api/signed-urls"} <= names
    assert any("/tiles/" in n for n in names)
    rows = fuzz_server[1].ctx.atlas("research").series.to_arrow().value.to_pylist()
    real_id = rows[0]["series_id"]
    calls = 0
    for operation in operations:

        @settings(
            max_examples=CASES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:
            nonlocal calls
            for headers in ({"Authorization": f"Bearer {token}"}, {}):
                response = case.call(headers=headers, timeout=60)
                calls += 1
                case.validate_response(response, checks=[not_a_server_error])
            # again on a series that exists, so the other parameters are checked past the lookup
            if case.path_parameters and "series_id" in case.path_parameters:
                case.path_parameters["series_id"] = real_id
            elif isinstance(case.body, dict) and "series_id" in case.body:
                case.body["series_id"] = real_id
            else:
                return
            response = case.call(headers={"Authorization": f"Bearer {token}"}, timeout=60)
            calls += 1
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert calls >= 2 * len(operations)
