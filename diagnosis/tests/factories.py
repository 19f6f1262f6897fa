"""factory_boy factories for the diagnosis models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from diagnosis import models, roles


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.org")
    password = factory.django.Password("correct-horse-battery-9")


def _with_role(default: str | None) -> factory.PostGeneration:
    """Adds the user to a role group; `Factory(role="admin")` overrides the default."""

    def add(user, create: bool, extracted: str | None, **kwargs: object) -> None:
        name = extracted or default
        if create and name:
            user.groups.add(Group.objects.get(name=name))

    return factory.PostGeneration(add)


class ClinicianFactory(UserFactory):
    role = _with_role(roles.CLINICIAN)


class RadiologistFactory(UserFactory):
    role = _with_role(roles.RADIOLOGIST)


class AdminFactory(UserFactory):
    is_staff = True
    role = _with_role(roles.ADMIN)


class CaseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Case

    patient_ref = factory.Sequence(lambda n: f"PSN-{n:05d}")
    body_part = models.BodyPart.HAND
    clinical_question = "Fall on outstretched hand"
    created_by = factory.SubFactory(ClinicianFactory)


class XrayImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.XrayImage

    case = factory.SubFactory(CaseFactory)
    position = factory.Sequence(lambda n: n)
    file = factory.django.ImageField(width=64, height=48, color="gray", format="PNG")
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    width = 64
    height = 48
    source_format = models.XrayImage.SourceFormat.PNG


class ModelVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.ModelVersion

    version = factory.Sequence(lambda n: f"test-{n}")
    artifact_dir = "/nonexistent"
    sha256 = "0" * 64
    architecture = "plain_cnn"
    input_spec = {"size": 64}
    thresholds = {"balanced": 0.5, "high_sensitivity": 0.2}
    status = models.ModelVersion.Status.ACTIVE


class PredictionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Prediction

    image = factory.SubFactory(XrayImageFactory)
    model_version = factory.SubFactory(ModelVersionFactory)
    status = models.Prediction.Status.DONE
    probability = 0.8
    label = models.Label.FRACTURED
    labels = {"balanced": "fractured", "high_sensitivity": "fractured"}
