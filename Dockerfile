# The agent-identity image: one executable, `agent-identity operator` or
# `agent-identity admission` (the chart passes the subcommand).
#
# The project and every dependency arrive as wheels built OUTSIDE the image
# (`pip wheel --wheel-dir build/wheels .`, done by `make image`), so the build
# itself needs no network and no compiler. BASE_IMAGE is any Debian-like image
# with python3.11 and the venv module: the public python:3.11-slim by default,
# a local debootstrapped Debian bookworm in `make image`.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS install
COPY build/wheels/ /wheels/
# A venv keeps the install independent of where the base keeps its python
# (/usr/local/bin in python:3.11-slim, /usr/bin in Debian). --no-index: only
# the wheels copied above, never the network.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /wheels /wheels/agent_identity-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && /opt/venv/bin/agent-identity --version \
    && mkdir -p /rootfs/etc \
    && cp /etc/passwd /etc/group /rootfs/etc/ \
    && echo "nonroot:x:65532:65532:nonroot:/nonexistent:/usr/sbin/nologin" >> /rootfs/etc/passwd \
    && echo "nonroot:x:65532:" >> /rootfs/etc/group

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="agent-identity" \
      org.opencontainers.image.description="Agent Identity Operator: governed identities for AI agents on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=install /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Non-root, numeric (Pod Security `restricted` runAsNonRoot can verify it):
# 65532 is the conventional "nonroot" uid of distroless images. It gets a passwd entry,
# as there, since some libraries look the user up by uid (getpass.getuser()); the entry
# is written in the install stage (same base, so the rest of the file is identical), so
# nothing runs in this stage.
COPY --from=install /rootfs/etc/passwd /rootfs/etc/group /etc/
USER 65532:65532
ENTRYPOINT ["agent-identity"]
CMD ["--help"]
