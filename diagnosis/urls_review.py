"""Radiologist pages: review queue, review screen, adjudication, reader statistics."""

app_name = "review"

urlpatterns: list = []
