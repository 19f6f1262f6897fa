"""Page forms. They check field shapes only; files are validated by `diagnosis.imaging` in the
`case_create` service, so page and API apply the same rules."""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.conf import settings

from diagnosis.models import PATIENT_REF_VALIDATOR, BodyPart


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.Field):
    """Several files in one input; cleans to the list of UploadedFile as sent. The files' content
    (including empty files) is judged by the service, not here."""

    widget = MultipleFileInput

    def clean(self, value: Any) -> list[Any]:
        items = value if isinstance(value, list | tuple) else [value]
        return [item for item in items if item]


class CaseIntakeForm(forms.Form):
    patient_ref = forms.CharField(
        label="Patient reference",
        max_length=64,
        validators=[PATIENT_REF_VALIDATOR],
        help_text=(
            "A pseudonymous reference from your system (e.g. PSN-00042). Never a name, date of "
            "birth or hospital number."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    # No default: a pre-selected region is too easily left as it is (and feeds the region metrics).
    body_part = forms.ChoiceField(
        label="Body part", choices=[("", "Choose the body part…"), *BodyPart.choices]
    )
    clinical_question = forms.CharField(
        label="Clinical question",
        required=False,
        max_length=2000,
        help_text="What should the reader look for? No patient names or identifiers.",
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    urgent = forms.BooleanField(label="Urgent", required=False)
    images = MultipleFileField(
        label="Radiographs",
        required=False,  # the service reports a missing file with a stable code
        help_text="PNG, JPEG or DICOM; one or more images of this case.",
        widget=MultipleFileInput(
            attrs={"accept": ".png,.jpg,.jpeg,.dcm,.dicom,image/png,image/jpeg,application/dicom"}
        ),
    )
    # A fresh key per rendered form: a double submit or a retried upload creates one case.
    idempotency_key = forms.CharField(
        required=False, max_length=128, widget=forms.HiddenInput(attrs={"autocomplete": "off"})
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)
        self.max_files = settings.DATA_UPLOAD_MAX_NUMBER_FILES
        self.max_file_bytes = settings.UPLOAD_MAX_FILE_BYTES
