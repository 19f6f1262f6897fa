"""Writes. One module per area; import from the module (`diagnosis.services.cases`)."""
