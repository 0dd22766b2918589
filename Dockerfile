# syntax=docker/dockerfile:1
# helios-scaler image: the KEDA external scaler (gRPC :6000) and its HTTP port (:8080).
#
#   docker build -t ghcr.io/helios-scaler/helios-scaler:0.1.0 .
#   docker run --rm -p 6000:6000 -p 8080:8080 ghcr.io/helios-scaler/helios-scaler:0.1.0 demo

ARG PYTHON_VERSION=3.11

# ---- builder: install the package and its dependencies into a self-contained venv ----
FROM python:${PYTHON_VERSION}-slim AS builder

# Bytecode is compiled here on purpose: the runtime root filesystem is read-only.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the wheel build needs (see .dockerignore); the package data (the demo trace) is
# under src/.
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --upgrade pip \
 && pip install .

# ---- final: the venv on a clean slim base, run as an unprivileged user ----
FROM python:${PYTHON_VERSION}-slim

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="helios-scaler" \
      org.opencontainers.image.description="Predictive KEDA external scaler: serves each workload's forecast load leadTime ahead" \
      org.opencontainers.image.url="https://github.com/helios-scaler/helios-scaler" \
      org.opencontainers.image.source="https://github.com/helios-scaler/helios-scaler" \
      org.opencontainers.image.documentation="https://github.com/helios-scaler/helios-scaler/tree/main/charts/helios-scaler" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"

# LightGBM's shared library links against the GNU OpenMP runtime, which slim images lack.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric UID/GID (the chart's runAsUser/fsGroup) so runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 helios \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin helios

COPY --from=builder /opt/venv /opt/venv

# The root filesystem is read-only in Kubernetes: anything that wants to write goes to /tmp
# (an emptyDir there). MPLCONFIGDIR: matplotlib is imported by the forecasting libraries.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib

USER 10001:10001
WORKDIR /tmp

EXPOSE 6000 8080

# Kubernetes uses the chart's probes and ignores this; it helps under plain docker/compose.
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["helios-scaler"]
CMD ["serve", "--config", "/etc/helios-scaler/config.yaml"]
