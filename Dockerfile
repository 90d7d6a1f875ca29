# Opentime server image. Multi-stage: the build stage downloads the dependencies and builds the wheel (with
# the shipped campaigns and static assets, app/shipped/); the runtime stage gets only the finished
# virtualenv, has no pip and no compiler, and runs as an unprivileged user.
#
#   DOCKER_BUILDKIT=1 docker build -t opentime .
#   DOCKER_BUILDKIT=1 docker build --build-arg BASE_IMAGE=opentime-base:bookworm \
#       --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t opentime .
#
# BASE_IMAGE: any Debian-like image with Python 3.11+ and its venv module. The default is the official
# image; tools/build-base-image.sh makes opentime-base:bookworm from Debian packages where no registry
# can be reached. The secret pip_ca (optional) is a CA bundle for package downloads behind a
# TLS-inspecting proxy: mounted for the one step that downloads, never written to a layer.
# No "# syntax=" line on purpose: that would fetch the Dockerfile frontend from a registry; the builder's
# own frontend (Docker 20.10+) understands RUN --mount.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# /opt/build holds the build tools; /opt/opentime only what the server runs (copied whole, same path).
RUN python3 -m venv /opt/build && python3 -m venv /opt/opentime
WORKDIR /src
# Dependencies first, keyed on pyproject.toml alone: a code change reuses this layer and downloads nothing.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca \
    set -eu; \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/build/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
print("\n".join(p["build-system"]["requires"] + ["wheel"]), file=open("/tmp/build.txt", "w")); \
print("\n".join(p["project"]["dependencies"]), file=open("/tmp/run.txt", "w"))'; \
    /opt/build/bin/pip install --quiet -r /tmp/build.txt; \
    /opt/opentime/bin/pip install --quiet -r /tmp/run.txt
# The same inputs as tests/test_wheel_install.py: setup.py puts amp_templates/ and static/ into the wheel.
COPY setup.py MANIFEST.in README.md ./
COPY app ./app
COPY amp_templates ./amp_templates
COPY static ./static
# No network from here on: the wheel is built with the tools installed above and installed without its
# dependencies (all present); pip check fails the build if pyproject.toml and the venv disagree.
RUN /opt/build/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/opentime/bin/pip install --quiet --no-index --no-deps /wheels/opentime-*.whl \
    && /opt/opentime/bin/pip check \
    && /opt/opentime/bin/pip uninstall --quiet --yes pip setuptools

FROM ${BASE_IMAGE} AS runtime
# Lets tools/container-check.sh remove its own superseded builds (and nobody else's).
LABEL org.opentime.image=server
ENV PATH=/opt/opentime/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPENTIME_DATABASE_URL=sqlite:////data/opentime.db \
    OPENTIME_HOST=0.0.0.0 \
    OPENTIME_PORT=8000 \
    OPENTIME_FORWARDED_ALLOW_IPS=* \
    OPENTIME_LOG_FORMAT=json
# A fixed numeric uid, so orchestrators can check "non-root" (runAsNonRoot) and volumes can be chowned to it.
RUN groupadd --system --gid 10001 opentime \
    && useradd --system --uid 10001 --gid opentime --home-dir /srv/opentime --shell /usr/sbin/nologin opentime \
    && mkdir -p /data /srv/opentime && chown opentime:opentime /data /srv/opentime
COPY --from=build /opt/opentime /opt/opentime
USER 10001:10001
WORKDIR /srv/opentime
VOLUME ["/data"]
EXPOSE 8000
# Python's urllib (no curl in the image); any answer but 200 from /healthz, or none in 3 s, is a failure.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:${OPENTIME_PORT}/healthz', timeout=2).status != 200)"
# Keys and senders come from the environment or a mounted config file, never from the image:
#   OPENTIME_PUBLIC_BASE_URL, OPENTIME_KEYS_FILE (mounted secret), OPENTIME_ALLOWED_SENDERS.
# The example campaigns ship inside the package (app/shipped/); mount your own and set
# OPENTIME_TEMPLATES_DIR / OPENTIME_STATIC_DIR. `opentime serve --demo` runs the demo campaign.
CMD ["opentime", "serve"]
