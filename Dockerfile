# Fracture Portal image: the web app and every Celery worker run from it.
#   CPU (default):  docker build -t fracture-portal .
#   GPU workers:    docker build -t fracture-portal-gpu --build-arg TF_PACKAGE="tensorflow[and-cuda]" .
FROM python:3.11-slim

ARG TF_PACKAGE=tensorflow-cpu
ARG TF_VERSION=2.21.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=fracture_portal.settings

# Runtime libraries for OpenCV (headless build); a non-root user runs everything.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 portal

WORKDIR /app
COPY requirements.txt ./
# requirements.txt pins tensorflow-cpu; the GPU build swaps in TF_PACKAGE at the same version.
RUN grep -v '^tensorflow-cpu==' requirements.txt > /tmp/requirements-base.txt \
    && pip install -r /tmp/requirements-base.txt "${TF_PACKAGE}==${TF_VERSION}"

COPY --chown=portal:portal . .
RUN mkdir -p var/media var/static var/beat && chown -R portal:portal var

USER portal
EXPOSE 8000
CMD ["gunicorn", "fracture_portal.wsgi:application", "--bind", "0.0.0.0:8000"]
