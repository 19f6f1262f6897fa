"""PS3.15 basic-profile de-identification, tested against table E.1-1 itself: every attribute of
the table is planted (at the top level and inside a sequence item), then checked for its action."""

from __future__ import annotations

import copy
import io

import numpy as np
import pydicom
import pytest
from pydicom.datadict import dictionary_description, dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from diagnosis.exceptions import InvalidUploadError
from diagnosis.imaging import validate_upload
from diagnosis.imaging.deidentify import (
    ProfileRule,
    deidentify,
    effective_action,
    profile_table,
)
from diagnosis.tests.imaging import builders

RULES = [rule for rule in profile_table() if not rule.is_pattern]
# File meta (0002) attributes live in the file meta, not in the data set (nor in sequences).
DATASET_RULES = [rule for rule in RULES if rule.tag_int >> 16 != 0x0002]
NESTED_MARKER = "Nested^Secret"
HOLDER = "AnatomicRegionSequence"  # not in the table: kept, its items de-identified


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def _planted_value(rule: ProfileRule) -> object:
    """A value of the attribute's VR that is recognisable after de-identification."""
    vr, n = _vr(rule.tag_int), rule.tag_int
    by_vr: dict[str, object] = {
        "AE": "PHIAE",
        "AS": "042Y",
        "CS": "PHICS",
        "DA": "20240102",
        "DT": "20240102101112",
        "TM": "101112",
        "DS": "42.5",
        "IS": "42",
        "PN": "Doe^Jane",
        "UI": f"1.2.826.0.1.3680043.9.7777.{n}",
        "UR": "http://phi.example/x",
        "AT": 0x00100010,
        "FL": 42.0,
        "FD": 42.0,
        "SL": 42,
        "SS": 42,
        "SV": 42,
        "UL": 42,
        "US": 42,
        "UV": 42,
    }
    if vr == "SQ":
        item = Dataset()
        item.PatientName = NESTED_MARKER
        item.PersonName = NESTED_MARKER
        return Sequence([item])
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return b"PHIPHI"
    return by_vr.get(vr, f"PHI-{rule.keyword}"[:16])


def _plant(ds: Dataset, rule: ProfileRule) -> None:
    ds.add_new(rule.tag_int, _vr(rule.tag_int), _planted_value(rule))


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == b"" or (hasattr(value, "__len__") and not value)


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, Dataset]:
    """(original, de-identified): every table attribute at the top level and in a kept item."""
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    holder = Dataset()
    for rule in DATASET_RULES:
        _plant(ds, rule)
        _plant(holder, rule)
    ds.add_new(pydicom.datadict.tag_for_keyword(HOLDER), "SQ", Sequence([holder]))
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    work = copy.deepcopy(ds)
    deidentify(work)
    return ds, work


def test_the_table_file_is_complete_and_consistent():
    tags = [rule.tag for rule in profile_table()]
    assert len(tags) == len(set(tags))
    assert len(RULES) > 400
    for rule in RULES:
        assert keyword_for_tag(rule.tag_int) == rule.keyword, rule
        assert dictionary_description(rule.tag_int), rule
        assert effective_action(rule.action) in ("X", "Z", "D", "U", "K*"), rule
    keywords = {rule.keyword for rule in RULES}
    # The attributes found in stored "de-identified" originals (issue #13) are all in the table.
    assert {
        "PatientTelecomInformation",
        "PatientBirthDateInAlternativeCalendar",
        "ClinicalTrialSponsorName",
        "ClinicalTrialSiteID",
        "ClinicalTrialSubjectID",
        "ScheduledProcedureStepID",
        "BarcodeValue",
        "ContentSequence",
        "IssuerOfAccessionNumberSequence",
    } <= keywords
    patterns = {rule.tag for rule in profile_table() if rule.is_pattern}
    assert patterns == {"50XX,XXXX", "60XX,3000", "60XX,4000", "GGGG,EEEE"}


def _check(rule: ProfileRule, before: Dataset, after: Dataset) -> None:
    tag = rule.tag_int
    action = effective_action(rule.action)
    if action == "X":
        assert tag not in after, f"{rule.keyword} must be removed"
        return
    assert tag in after, f"{rule.keyword} must be kept ({rule.action})"
    old, new = before[tag].value, after[tag].value
    if action == "Z":
        assert _is_empty(new), f"{rule.keyword} must be emptied"
    elif action == "D":
        assert not _is_empty(new), f"{rule.keyword} needs a dummy value"
        if after[tag].VR == "SQ":
            assert all(NESTED_MARKER not in str(item) for item in new)
        else:
            assert new != old, f"{rule.keyword} keeps its value"
    elif action == "U":
        assert new != old
        for uid in new if after[tag].VM > 1 else [new]:
            assert UID(str(uid)).is_valid, rule.keyword
    else:  # K*: the sequence stays, its items are de-identified
        assert len(new) == len(old)
        assert all(NESTED_MARKER not in str(item) for item in new)


@pytest.mark.parametrize("rule", DATASET_RULES, ids=lambda rule: rule.keyword)
def test_every_table_attribute_gets_its_action(planted, rule):
    original, work = planted
    if rule.tag_int >> 16 == 0x0000:  # command elements: removed from the top level
        assert rule.tag_int not in work
    else:
        _check(rule, original, work)
    holder = getattr(original, HOLDER)[0]
    kept = getattr(work, HOLDER)[0]
    _check(rule, holder, kept)  # the same rule inside a sequence item


def test_uids_are_remapped_consistently_across_levels_and_the_file_meta(planted):
    original, work = planted
    sop = pydicom.datadict.tag_for_keyword("SOPInstanceUID")
    assert work[sop].value != original[sop].value
    assert getattr(work, HOLDER)[0].FrameOfReferenceUID == work.FrameOfReferenceUID
    assert work.file_meta.MediaStorageSOPInstanceUID == work.SOPInstanceUID
    assert work.SOPClassUID == original.SOPClassUID  # class UIDs are not identifying


def test_nothing_planted_survives_anywhere(planted):
    _original, work = planted
    planted_uids = {f"1.2.826.0.1.3680043.9.7777.{rule.tag_int}" for rule in RULES}
    for elem in work.iterall():
        text = str(elem.value)
        for marker in ("PHI", "Doe^Jane", NESTED_MARKER, "20240102", "101112"):
            assert marker not in text, (elem.keyword, marker)
        assert text not in planted_uids, elem.keyword


def test_private_overlay_and_curve_groups_are_removed_at_every_level():
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    item = Dataset()
    item.private_block(0x0019, "ACME", create=True).add_new(0x01, "LO", "nested-secret")
    ds.ReferencedSeriesSequence = Sequence([item])
    ds.private_block(0x0029, "ACME", create=True).add_new(0x10, "LO", "top-secret")
    ds.add_new(0x60003000, "OW", b"\x01\x02" * 32)  # overlay bitmap
    ds.add_new(0x60004000, "LT", "Doe, John")  # overlay comments
    ds.add_new(0x50000010, "US", 2)  # retired curve group
    deidentify(ds)
    assert not [elem for elem in ds.iterall() if elem.tag.is_private]
    assert not [elem for elem in ds.iterall() if elem.tag.group in (0x5000, 0x6000)]


def test_the_data_set_is_marked_deidentified():
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    deidentify(ds)
    assert ds.PatientIdentityRemoved == "YES"
    (code,) = ds.DeidentificationMethodCodeSequence
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert "Basic Application Level Confidentiality Profile" in ds.DeidentificationMethod


def test_issue_attributes_do_not_reach_the_kept_original():
    """The leaks found in stored originals with KEEP_ORIGINAL_UPLOADS=1 (issue #13), end to end
    through validate_upload and the written file."""
    ds = builders.dicom_dataset(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1)))
    ds.PatientTelecomInformation = "tel:+15550100"
    ds.PatientBirthDateInAlternativeCalendar = "5730-01-01"
    ds.ClinicalTrialSponsorName = "ACME Trials"
    ds.ClinicalTrialSiteID = "SITE-SECRET"
    ds.ClinicalTrialSubjectID = "SUBJ-SECRET"
    ds.ScheduledProcedureStepID = "SPS-SECRET"
    ds.BarcodeValue = "BARCODE-SECRET"
    text = Dataset()
    text.ValueType = "TEXT"
    text.TextValue = "Patient John Doe, MRN-0042"
    ds.ContentSequence = Sequence([text])
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "HOSPITAL-SECRET"
    ds.IssuerOfAccessionNumberSequence = Sequence([issuer])
    data = builders.dicom_bytes(ds)
    assert b"MRN-0042" in data
    original = validate_upload(data, "x.dcm", keep_original=True).original_bytes
    for secret in (
        b"15550100",
        b"5730-01-01",
        b"ACME Trials",
        b"SITE-SECRET",
        b"SUBJ-SECRET",
        b"SPS-SECRET",
        b"BARCODE-SECRET",
        b"MRN-0042",
        b"John Doe",
        b"HOSPITAL-SECRET",
    ):
        assert secret not in original, secret
    kept = pydicom.dcmread(io.BytesIO(original))
    assert kept.ClinicalTrialSponsorName  # D: a dummy, not the sponsor
    assert "IssuerOfAccessionNumberSequence" not in kept


def test_burned_in_annotation_is_refused_with_a_reason():
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InvalidUploadError) as info:
        validate_upload(builders.dicom_bytes(ds), "x.dcm")
    assert info.value.code == "burned_in_annotation"
    assert "without burned-in annotation" in info.value.message
    ds.BurnedInAnnotation = "NO"
    assert validate_upload(builders.dicom_bytes(ds), "x.dcm").source_format == "dicom"


def test_the_deidentified_data_set_is_written_as_a_file(planted):
    _original, work = planted
    written = builders.dicom_bytes(work)
    again = pydicom.dcmread(io.BytesIO(written))
    assert again.PatientIdentityRemoved == "YES"
    assert b"Doe^Jane" not in written
    assert NESTED_MARKER.encode() not in written


def test_the_file_meta_keeps_no_source_names():
    ds = builders.dicom_dataset(np.zeros((8, 8), np.uint8))
    ds.file_meta = ds.file_meta or FileMetaDataset()
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_PACS"
    deidentify(ds)
    assert "SourceApplicationEntityTitle" not in ds.file_meta
