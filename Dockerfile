# syntax=docker/dockerfile:1
# The ModelPool image: the operator (`modelpool operator run`) and the sidecar router
# (`modelpool router ...`). Only the core dependencies of pyproject.toml are installed:
# no torch, no Triton (those are the `models` and `triton` extras, used to build and
# profile model repositories, not to run the operator or the router).
#
#   docker build -t <registry>/modelpool:0.1.0 .
#   docker push <registry>/modelpool:0.1.0

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies come from the hashed lock (`make image-lock`), so a rebuild installs the same
# files or fails; the build backend is in the lock too, and builds ModelPool without isolation.
COPY image-requirements.txt pyproject.toml README.md ./
COPY operator/ operator/
RUN python -m venv /opt/modelpool \
 && /opt/modelpool/bin/pip install --require-hashes --no-deps -r image-requirements.txt \
 && /opt/modelpool/bin/pip install --no-deps --no-build-isolation . \
 && /opt/modelpool/bin/pip check \
 && /opt/modelpool/bin/modelpool --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="modelpool" \
      org.opencontainers.image.description="ModelPool operator and sidecar router" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PATH=/opt/modelpool/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/modelpool /opt/modelpool
# A fixed numeric non-root user, so `runAsNonRoot: true` can verify it without a passwd lookup.
RUN groupadd --system --gid 10001 modelpool \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/modelpool --create-home \
      --shell /usr/sbin/nologin modelpool
USER 10001:10001
WORKDIR /home/modelpool
# 9090: operator /metrics (--metrics-port), 8081: kopf liveness (--liveness), 8082: readiness (--readiness).
EXPOSE 9090 8081 8082
ENTRYPOINT ["modelpool"]
CMD ["operator", "run", "--liveness", "http://0.0.0.0:8081/healthz", "--readiness", "http://0.0.0.0:8082/readyz", "--metrics-port", "9090"]
