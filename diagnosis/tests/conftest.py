from __future__ import annotations

import pytest
from django.test import Client

from diagnosis.tests import factories


@pytest.fixture
def clinician(db):
    return factories.ClinicianFactory(username="clin_a")


@pytest.fixture
def clinician_b(db):
    return factories.ClinicianFactory(username="clin_b")


@pytest.fixture
def radiologist(db):
    return factories.RadiologistFactory(username="rad_a")


@pytest.fixture
def radiologist_b(db):
    return factories.RadiologistFactory(username="rad_b")


@pytest.fixture
def admin_user(db):
    return factories.AdminFactory(username="admin_a")


@pytest.fixture
def client_for():
    """client_for(user) -> a Django test client logged in as that user."""

    def make(user) -> Client:
        c = Client()
        c.force_login(user)
        return c

    return make
