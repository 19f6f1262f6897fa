"""DICOM de-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile.

The profile is data: `ps3_15_table_e1_1.csv` holds table E.1-1 (tag, keyword, basic-profile action,
name, source edition). `deidentify()` applies it in place to the data set and, recursively, to every
item of every sequence. Where the table offers a choice the strictest allowed action is taken:

- ``X`` (and ``X/Z``, ``X/D``, ``X/Z/D``): remove;
- ``Z`` (and ``Z/D``): keep the attribute with an empty value (an empty sequence for SQ);
- ``D``: replace with a dummy value of the same VR (a sequence with one empty item for SQ);
- ``U``: replace each UID by one derived from it and the site secret (consistent within a site, so
  images of one study stay together, and not reversible without the secret);
- ``X/Z/U*``: keep the sequence; its items are de-identified like the rest (their instance UIDs
  remapped), which keeps references between de-identified images intact.

Beyond the table (PS3.15 E.1.1 note 4 and the profile's intent) every private attribute, every curve
(50xx) and overlay (60xx) group, every person name (PN) and date/time (DA, DT, TM) not listed is
removed or emptied, and every instance UID not listed is remapped; class UIDs (SOP class, transfer
syntax, coding scheme...) are kept. Command elements (0000,eeee) are removed from the top level.
The data set is then marked: PatientIdentityRemoved = YES,
DeidentificationMethod and DeidentificationMethodCodeSequence (DCM 113100, Basic Application
Confidentiality Profile).

Burned-in text is not something this module can remove: `refuse_burned_in_annotation()` turns away
data sets that declare it.
"""

from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from diagnosis.exceptions import InvalidUploadError

__all__ = [
    "DEIDENTIFICATION_METHOD",
    "TABLE_PATH",
    "ProfileRule",
    "deidentify",
    "effective_action",
    "profile_table",
    "refuse_burned_in_annotation",
]

TABLE_PATH = Path(__file__).with_name("ps3_15_table_e1_1.csv")
DEIDENTIFICATION_METHOD = (
    "Fracture Portal: DICOM PS3.15 Basic Application Level Confidentiality Profile"
)
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

# Dummy values (action D), by VR: non-empty, valid for the VR, and saying nothing about anyone.
_DUMMY_TEXT = "ANONYMIZED"
_DUMMY_BY_VR: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": _DUMMY_TEXT,
    "LT": _DUMMY_TEXT,
    "PN": _DUMMY_TEXT,
    "SH": _DUMMY_TEXT,
    "ST": _DUMMY_TEXT,
    "UC": _DUMMY_TEXT,
    "UT": _DUMMY_TEXT,
    "UR": "urn:oid:2.25.0",
    "AT": 0,
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI"}
    | {"UR", "UT"}
)
# UIDs that identify a kind of thing, not an instance: kept as they are.
_CLASS_UID_KEYWORDS = (
    "SOPClassUID",
    "MediaStorageSOPClassUID",
    "TransferSyntaxUID",
    "ReferencedSOPClassUID",
    "ImplementationClassUID",
    "CodingSchemeUID",
    "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID",
    "AffectedSOPClassUID",
    "RequestedSOPClassUID",
    "ContextGroupExtensionCreatorUID",
    "MappingResourceUID",
    "ReferencedTransferSyntaxUIDInFile",
    "ReferencedSOPClassUIDInFile",
    "RetrieveLocationUID",
)
_CLASS_UID_TAGS = frozenset(tag_for_keyword(k) for k in _CLASS_UID_KEYWORDS)
_PIXEL_DATA_TAG = tag_for_keyword("PixelData")
# File meta attributes that name the sending system or carry private data (PS3.15 E.1.1 item 7).
_FILE_META_REMOVE = (
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
    "PrivateInformationCreatorUID",
    "PrivateInformation",
)


@dataclass(frozen=True)
class ProfileRule:
    """One row of table E.1-1: `tag` is "GGGG,EEEE" (hex, upper case) or a group pattern such as
    "50XX,XXXX"; `action` is the table's basic-profile code, e.g. "X/Z/D"."""

    tag: str
    keyword: str
    action: str
    name: str
    source: str

    @property
    def is_pattern(self) -> bool:
        return "X" in self.tag or "G" in self.tag

    @property
    def tag_int(self) -> int:
        group, element = self.tag.split(",")
        return (int(group, 16) << 16) | int(element, 16)


@functools.cache
def profile_table() -> tuple[ProfileRule, ...]:
    """Every row of the table file (comment lines start with '#')."""
    with TABLE_PATH.open(newline="", encoding="utf-8") as handle:
        lines = [line for line in handle if line.strip() and not line.startswith("#")]
    return tuple(
        ProfileRule(
            tag=row["tag"],
            keyword=row["keyword"],
            action=row["action"],
            name=row["name"],
            source=row["source"],
        )
        for row in csv.DictReader(lines)
    )


def effective_action(code: str) -> str:
    """The action applied for a table code: the strictest one it allows (see the module
    docstring): "X", "Z", "D", "U" or "K*" (keep the sequence, de-identify its items)."""
    if code == "X/Z/U*":
        return "K*"
    if "X" in code.split("/"):
        return "X"
    if code == "Z/D":
        return "Z"
    if code in ("X", "Z", "D", "U"):
        return code
    raise ValueError(f"unknown basic-profile action {code!r}")


@functools.cache
def _actions_by_tag() -> dict[int, str]:
    return {
        rule.tag_int: effective_action(rule.action)
        for rule in profile_table()
        if not rule.is_pattern
    }


def remap_uid(value: str) -> str:
    """A UID derived from `value` and the site secret: the same input gives the same output on
    one site (references stay consistent), and the input cannot be recovered from it."""
    secret = hashlib.sha256(settings.SECRET_KEY.encode()).hexdigest()
    return str(generate_uid(entropy_srcs=[secret, value]))


def _empty(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in _STRING_VRS:
        elem.value = ""
    else:
        elem.value = None


def _dummy(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence([Dataset()])
    elif elem.VR == "UI":
        _remap(elem)
    elif elem.VR in _BINARY_VRS:
        elem.value = b"\x00\x00"
    else:
        elem.value = _DUMMY_BY_VR.get(elem.VR, _DUMMY_TEXT)


def _remap(elem: DataElement) -> None:
    if not elem.value:
        return
    if elem.VM > 1:
        elem.value = [remap_uid(str(v)) for v in elem.value]
    else:
        elem.value = remap_uid(str(elem.value))


def _is_curve_or_overlay(group: int) -> bool:
    # Curves (50xx) and overlays (60xx; their bitmaps may carry burned-in text): even groups only,
    # odd ones are private and removed anyway.
    return 0x5000 <= group <= 0x50FF or 0x6000 <= group <= 0x60FF


def _deidentify_element(dataset: Dataset, elem: DataElement) -> None:
    tag = elem.tag
    if tag == _PIXEL_DATA_TAG:
        return
    if tag.is_private or _is_curve_or_overlay(tag.group):
        del dataset[tag]
        return
    action = _actions_by_tag().get(int(tag))
    if action == "X":
        del dataset[tag]
    elif action == "Z":
        _empty(elem)
    elif action == "D":
        _dummy(elem)
    elif action == "U":
        _remap(elem)
    elif action == "K*":
        return  # the walk de-identifies the sequence's items
    elif elem.VR in ("PN", "DA", "DT", "TM"):
        _empty(elem)
    elif elem.VR == "UI" and tag not in _CLASS_UID_TAGS:
        _remap(elem)


def deidentify(ds: Dataset) -> None:
    """Apply the basic profile to `ds` in place (see the module docstring), file meta included."""
    ds.remove_private_tags()
    ds.walk(_deidentify_element, recursive=True)
    # Command elements (0000,eeee) have no place in a stored data set (DICOM files cannot hold them
    # at the top level); the table's actions for them still apply inside sequences.
    for tag in [elem.tag for elem in ds if elem.tag.group == 0x0000]:
        del ds[tag]
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        if file_meta.get("MediaStorageSOPInstanceUID"):
            file_meta.MediaStorageSOPInstanceUID = remap_uid(
                str(file_meta.MediaStorageSOPInstanceUID)
            )
        for keyword in _FILE_META_REMOVE:
            if keyword in file_meta:
                delattr(file_meta, keyword)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([code])


BURNED_IN_MESSAGE = (
    "This DICOM image declares burned-in annotation (BurnedInAnnotation = YES): text such as the "
    "patient's name may be drawn into the pixels, which de-identification cannot remove. It was "
    "not stored. Export the image again without burned-in annotation (or with it removed by your "
    "PACS), then upload that file."
)


def refuse_burned_in_annotation(ds: Dataset) -> None:
    """Raise `burned_in_annotation` (400) if the data set declares burned-in annotation."""
    value = ds.get("BurnedInAnnotation")
    if value is not None and str(value).strip().upper() == "YES":
        raise InvalidUploadError(BURNED_IN_MESSAGE, code="burned_in_annotation")
