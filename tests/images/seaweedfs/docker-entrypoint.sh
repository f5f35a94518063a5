#!/usr/bin/env bash
# Starts SeaweedFS (`weed mini`: master, volume server, filer and S3 in one process) with its
# data in /data and S3 on 8333, signed requests only: one identity, MinIO's variables
# MINIO_ROOT_USER and MINIO_ROOT_PASSWORD (both required). Any other command runs as given.
set -euo pipefail

if [[ ${1:-} != weed || $# -gt 1 ]]; then
    exec "$@"
fi
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER must be set}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD must be set}"
config=/run/zdr-s3.json
umask 077
printf '{"identities":[{"name":"root","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
    "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >"$config"
mkdir -p /data
exec weed mini \
    -dir=/data \
    -ip=127.0.0.1 \
    -ip.bind=0.0.0.0 \
    -s3.port=8333 \
    -s3.config="$config" \
    -s3.port.iceberg=0 \
    -s3.port.lance=0 \
    -webdav=false \
    -admin.ui=false \
    -master.telemetry=false \
    -master.resumeState=false \
    -master.volumeSizeLimitMB=64 \
    -volume.max=16
