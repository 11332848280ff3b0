"""Tooling fixtures: the deployable stack, packaged offline once per stage, for the template tests."""

from __future__ import annotations

import pytest

from tests.tooling.template_support import STAGES, Packaged, package_stage


@pytest.fixture(scope="module", params=STAGES)
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    return package_stage(request.param, tmp_path_factory)
