# syntax=docker/dockerfile:1
# sam-sidecar: the drafting sidecar for vLLM / vLLM-Ascend rollouts.
#   docker buildx build --platform linux/arm64,linux/amd64 -t sam-sidecar:0.1.0 .
# Both stages run on the target platform: @huggingface/tokenizers ships a native binary per
# platform, so node_modules must be installed for the platform that runs them.
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY proto ./proto
COPY config ./config
RUN npm run build && npm prune --omit=dev
COPY python ./python
COPY docker/shim-bundle.sh ./docker/
# The Python shim as a directory that works from PYTHONPATH, entry point included (see the chart's
# shim init container): no rebuild of the vLLM image needed.
RUN sh docker/shim-bundle.sh python /app/shim

FROM ${NODE_IMAGE} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /run/sam-sidecar \
 && chown 1000:1000 /run/sam-sidecar
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/proto ./proto
COPY --from=build /app/config ./config
COPY --from=build /app/shim ./shim
COPY docker/entrypoint.sh /usr/local/bin/sam-sidecar-entrypoint
# GLIBC_TUNABLES: transparent huge pages for the large arrays of long contexts where the kernel
# leaves them to madvise (first-touch page faults dominate indexing on VMs otherwise).
ENV NODE_ENV=production \
    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 \
    SAM_SIDECAR_SOCKET=/run/sam-sidecar/sidecar.sock \
    SAM_SIDECAR_HTTP_HOST=0.0.0.0 \
    SAM_SIDECAR_HTTP_PORT=8479
# The official image's "node" user (uid/gid 1000): never root. Nothing is written outside the
# socket directory, so the root filesystem can be read-only.
USER 1000:1000
VOLUME ["/run/sam-sidecar"]
EXPOSE 8479
HEALTHCHECK --interval=10s --timeout=2s --start-period=10s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.SAM_SIDECAR_HTTP_PORT || 8479) + '/readyz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# tini is PID 1: it reaps children and forwards SIGTERM/SIGINT to node, which drains and removes
# its socket.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sam-sidecar-entrypoint"]
CMD ["serve"]
