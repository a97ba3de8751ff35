# The hybridgpu operator image for people with Docker (or any Dockerfile builder).
#
# The project itself builds the image without an engine: `make image` (hack/build-image.sh)
# writes dist/hybridgpu-<version>.oci.tar, reproducibly, from Debian's packages and the same
# lock this file installs, requirements/runtime.txt (hashes required, no resolution). The
# chart's tests run that image. This file is the equivalent for a Docker workflow:
#     docker build -t REGISTRY/hybridgpu:VERSION .  &&  docker push REGISTRY/hybridgpu:VERSION
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY requirements/runtime.txt requirements/runtime.txt
RUN pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: \
      --prefix=/install -r requirements/runtime.txt
COPY pyproject.toml README.md LICENSE ./
COPY operator ./operator
# The project alone: its dependencies are all in /install already, from the lock.
RUN pip install --no-cache-dir --no-deps --prefix=/install . \
    && python -m compileall -q --invalidation-mode unchecked-hash /install

FROM python:3.11-slim-bookworm
COPY --from=build /install /usr/local
# A fixed non-root uid (as distroless "nonroot"), matching the chart's runAsUser.
USER 65532:65532
# Python writes nothing at runtime (the chart mounts a read-only root filesystem).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080 8081
LABEL org.opencontainers.image.source="https://github.com/hybridgpu/hybridgpu" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.title="hybridgpu"
ENTRYPOINT ["hybridgpu", "run"]
