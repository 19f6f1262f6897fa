"""Upload validation and canonicalisation of radiographs (PNG, JPEG, DICOM)."""
