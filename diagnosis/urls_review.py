"""Radiologist pages: review queue, review screen, adjudication, reader statistics; and every
user's notifications."""

from django.urls import path

from diagnosis.views import notifications, review

app_name = "review"

urlpatterns = [
    path("", review.queue_view, name="queue"),
    path("queue.json", review.queue_data_view, name="queue_data"),
    path("next/", review.claim_next_view, name="claim_next"),
    path("statistics/", review.statistics_view, name="statistics"),
    path("cases/<uuid:case_uuid>/", review.case_view, name="case"),
    path("cases/<uuid:case_uuid>/claim/", review.claim_view, name="claim"),
    path("cases/<uuid:case_uuid>/claim/renew/", review.claim_renew_view, name="claim_renew"),
    path("cases/<uuid:case_uuid>/release/", review.release_view, name="release"),
    path("cases/<uuid:case_uuid>/read/", review.submit_view, name="submit"),
    path("cases/<uuid:case_uuid>/draft/", review.draft_view, name="draft"),
    path("notifications/", notifications.notification_list_view, name="notifications"),
    path(
        "notifications/<int:notification_id>/read/",
        notifications.notification_read_view,
        name="notification_read",
    ),
    path(
        "notifications/read-all/",
        notifications.notification_read_all_view,
        name="notifications_read_all",
    ),
]
