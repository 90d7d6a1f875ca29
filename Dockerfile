# syntax=docker/dockerfile:1
# Multi-stage build: wheels are built in the first stage, the runtime image has no compiler
# and runs as an unprivileged user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip
# The same inputs as tests/test_wheel_install.py: setup.py puts amp_templates/ and static/ into the wheel.
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY app ./app
COPY amp_templates ./amp_templates
COPY static ./static
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENTIME_DATABASE_URL=sqlite:////data/opentime.db \
    OPENTIME_HOST=0.0.0.0 \
    OPENTIME_PORT=8000 \
    OPENTIME_FORWARDED_ALLOW_IPS=*
RUN groupadd --system opentime && useradd --system --gid opentime --home /srv/opentime opentime \
    && mkdir -p /data /srv/opentime && chown opentime:opentime /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER opentime
WORKDIR /srv/opentime
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:${OPENTIME_PORT}/healthz', timeout=2).status != 200)"
# Keys and senders come from the environment or a mounted config file, never from the image:
#   OPENTIME_PUBLIC_BASE_URL, OPENTIME_KEYS_FILE (mounted secret), OPENTIME_ALLOWED_SENDERS.
# The example campaigns ship inside the package (app/shipped/); mount your own and set
# OPENTIME_TEMPLATES_DIR / OPENTIME_STATIC_DIR. `opentime serve --demo` runs the demo campaign.
CMD ["opentime", "serve"]
